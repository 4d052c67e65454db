"""A training workdir that cannot mix, share or misreport runs.

Three files guard a workdir (WORKDIR below):
- `run_record.json`: the resolved config, the package version and the data's
  identity (folder and SHA-256 of the arrays read) of the run the workdir
  holds, written before its first epoch. Rerunning on the workdir with
  another config, or on other data, is refused with one line naming what
  differs, instead of resuming one run's checkpoints under another's config
  or recomputing its results on other test labels.
- `run.lock`: an exclusive `fcntl.flock` held while a run trains (on this
  file, which records the holder's pid, and on the workdir folder itself, so
  deleting `run.lock` mid-run does not let a second process in); a second
  process on the same workdir stops at once. The kernel drops the locks when
  their process dies (even by kill -9), so a killed run never blocks its resume.
- `members/manifest.json`: the member files the run wrote, with their sizes
  and SHA-256, written when every member is saved. `evaluate` and
  `export_main` read exactly these (never a glob of `members/`), and refuse
  a run without a manifest (unfinished) or with a changed or damaged file.
  A rerun of a finished workdir keeps its manifest until the new members are
  fully written (in `members/.staging/`, then moved into place).
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil

RECORD_NAME = "run_record.json"
LOCK_NAME = "run.lock"
MANIFEST_NAME = "manifest.json"
STAGING_NAME = ".staging"  # inside members/: outputs being written, moved into place once complete
# Config fields that change only what is printed, never what is computed.
UNCOMPARED_FIELDS = ("verbose",)
# Files a run writes; a workdir holding one of them but no record came from elsewhere.
_RUN_OUTPUTS = ("checkpoints", "members", "results.json")


class WorkdirError(RuntimeError):
    """The workdir cannot be used as asked; the message says why and what to do."""


class DiskFullError(WorkdirError):
    """The disk (or quota) holding the workdir filled up while the run wrote to it."""


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# TensorFlow's file writers raise OpError (not OSError) with the C library's text.
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def _is_disk_full(error):
    if isinstance(error, OSError):
        return error.errno in _DISK_FULL_ERRNOS
    return any(text in str(error) for text in _DISK_FULL_TEXTS)


@contextlib.contextmanager
def disk_full_is_one_line(workdir):
    """Turns a full disk anywhere in the `with` block (checkpoints, tickets, members, results) into `DiskFullError`.

    Nothing a run has finished is lost when a write fails: checkpoints are
    written to `ckpt-N_temp/` first, members to `members/.staging/`, JSON files
    to `.tmp` files, so rerunning the same command after freeing space resumes
    from the newest complete checkpoint exactly as an uninterrupted run.
    """
    try:
        yield
    except Exception as error:  # OSError, or TensorFlow's OpError from its own file writers
        if not _is_disk_full(error):
            raise
        where = f" writing {error.filename}" if getattr(error, "filename", None) else ""
        reason = os.strerror(error.errno) if isinstance(error, OSError) and error.errno else "No space left on device"
        raise DiskFullError(
            f"The disk holding --workdir={workdir} is full ({reason}{where}); nothing finished was lost: free space "
            "and rerun the same command, it resumes exactly from the newest complete checkpoint."
        ) from None


def package_version():
    """The installed tf_freetickets version string."""
    import tf_freetickets

    return tf_freetickets.__version__


def _atomic_write_json(path, payload):
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(payload, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _normalised(config):
    # JSON round trip: tuples and lists compare equal, as they are stored.
    return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config))


def prepare(workdir):
    """Creates `workdir` if needed and checks that this process can write there.

    Raises:
      WorkdirError: the path is a file, or it cannot be created or written.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir} is a file, not a folder; pass a folder path.")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test.{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise WorkdirError(f"--workdir={workdir} cannot be written ({error.strerror}); pass a writable folder.") from None


def _lock_folder(workdir):
    """An open descriptor of the `workdir` folder itself, flock'ed exclusively; None where folders cannot be locked.

    The folder, unlike `run.lock`, cannot be deleted and recreated under a
    running run, so deleting `run.lock` does not let a second run in.
    Raises BlockingIOError when another process holds it.
    """
    descriptor = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise
    except OSError:  # a file system without flock on folders (some NFS): the run.lock file lock alone
        os.close(descriptor)
        return None
    return descriptor


@contextlib.contextmanager
def exclusive_lock(workdir):
    """Holds an exclusive lock on `workdir` for the `with` block.

    Two `fcntl.flock` locks, both dropped by the kernel when the process
    dies: one on `run.lock` (which records the holder's pid for the message)
    and one on the workdir folder itself, which a user cannot delete from
    under the run as they can `run.lock`.

    Raises:
      WorkdirError: another live process holds it (its pid is named).
    """
    path = os.path.join(workdir, LOCK_NAME)
    handle = open(path, "a+")
    folder = None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            folder = _lock_folder(workdir)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise WorkdirError(
                f"--workdir={workdir} is in use by another training process (pid {owner}); wait for it to end "
                "or pass another --workdir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        if folder is not None:
            os.close(folder)
        handle.close()  # closing releases the lock


# Fields whose default changed after they were added: a record without the field was made by a package
# that behaved as this value, not as today's default (fused_batchnorm: Keras' own BatchNorm until 2026-12-07).
_BEHAVIOUR_BEFORE_FIELD = {"fused_batchnorm": False}


def _added_field_defaults():
    """{field: value} that reproduces what the package did before each config field existed.

    The rule for new fields: a field is added at a default that keeps the
    earlier behaviour; `_BEHAVIOUR_BEFORE_FIELD` holds those whose default
    changed since.
    """
    from tf_freetickets.experiments.config import fashion_mnist_defaults

    return {**_flatten(_normalised(fashion_mnist_defaults())), **_BEHAVIOUR_BEFORE_FIELD}


def config_differences(recorded, config):
    """Fields whose value differs between a recorded config dict and `config`.

    A field the record lacks counts as a difference unless `config` holds it at
    its default: fields are added with a default that keeps the earlier
    behaviour, so a run recorded before the field existed resumes.

    Returns:
      list of (field, recorded value, new value), a field missing on one side
      shown as "<absent>"; `UNCOMPARED_FIELDS` are left out.
    """
    old, new = _flatten(_normalised(recorded)), _flatten(_normalised(config))
    defaults = None
    differences = []
    for field in sorted(set(old) | set(new)):
        if field in UNCOMPARED_FIELDS:
            continue
        before, after = old.get(field, "<absent>"), new.get(field, "<absent>")
        if field not in old:
            defaults = _added_field_defaults() if defaults is None else defaults
            if field in defaults and after == defaults[field]:
                continue
        if before != after:
            differences.append((field, before, after))
    return differences


def check_record(workdir, config):
    """Refuses to continue a run in `workdir` that was started with another config or version.

    Returns:
      True when the workdir holds a run record that matches (a resume), False
      for a fresh workdir.

    Raises:
      WorkdirError: the config or package version differs (fields named), or
        the workdir holds run outputs without a record.
    """
    path = os.path.join(workdir, RECORD_NAME)
    fresh_start = f"use a new --workdir (or delete {workdir}) to start fresh"
    if not os.path.exists(path):
        found = [name for name in _RUN_OUTPUTS if os.path.exists(os.path.join(workdir, name))]
        if found:
            raise WorkdirError(
                f"--workdir={workdir} holds {', '.join(found)} but no {RECORD_NAME}, so its run cannot be "
                f"checked against this config; {fresh_start}."
            )
        return False
    try:
        with open(path) as f:
            record = json.load(f)
        recorded_config, recorded_version = record["config"], record["package_version"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WorkdirError(f"{path} is damaged ({error}); {fresh_start}.") from None
    differences = config_differences(recorded_config, config)
    if recorded_version != package_version():
        differences.insert(0, ("tf_freetickets version", recorded_version, package_version()))
    if differences:
        listed = ", ".join(f"{field} {before!r} -> {after!r}" for field, before, after in differences)
        raise WorkdirError(
            f"--workdir={workdir} holds a run with another config ({listed}); rerun with the recorded values "
            f"(in {path}) to resume it, or {fresh_start}{_EXTEND_HINT if _changes_length(differences) else ''}."
        )
    return True


# The learning-rate, mask and EDST schedules are laid out over config.epochs, so a longer run is another run.
_EXTEND_HINT = (
    " (a run cannot be extended in place: its schedules are laid out over config.epochs; to train a finished run "
    "longer, fine-tune its members as README 'Continuing a finished run' shows)"
)


def _changes_length(differences):
    return any(field in ("epochs", "ensemble.refinement_epochs", "ensemble.exploration_epochs") for field, _, _ in differences)


def recorded_config(source):
    """The config dict a run recorded in `source` (run_record.json, else results.json); {} when there is none."""
    for name in (RECORD_NAME, "results.json"):
        path = os.path.join(source, name)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    return dict(json.load(f).get("config") or {})
            except (OSError, ValueError, AttributeError):
                continue
    return {}


def write_record(workdir, config, data=None):
    """Records `config`, the package version and the data's identity as the run `workdir` holds.

    Args:
      workdir: the run's folder.
      config: the run's config.
      data: {"path", "sha256"} of the data the run reads (`data_sources.data_identity`), or None.
    """
    record = {"package_version": package_version(), "config": _normalised(config)}
    if data is not None:
        record["data"] = dict(data)
    _atomic_write_json(os.path.join(workdir, RECORD_NAME), record)


def check_data(workdir, data):
    """Refuses to continue the run in `workdir` on data other than the data it recorded.

    The content decides: the same files in another folder resume; other
    content anywhere is refused. A record written before data identities
    were recorded is not checked.

    Args:
      workdir: a workdir whose record matched the config (`check_record`).
      data: {"path", "sha256"} of the data this process read.

    Raises:
      WorkdirError: the recorded data differs (both folders and digests named).
    """
    path = os.path.join(workdir, RECORD_NAME)
    try:
        with open(path) as f:
            recorded = json.load(f).get("data")
    except (OSError, ValueError, AttributeError) as error:
        raise WorkdirError(f"{path} is damaged ({error}); use a new --workdir (or delete {workdir}) to start fresh.") from None
    if not recorded or recorded.get("sha256") == data["sha256"]:
        return
    raise WorkdirError(
        f"--workdir={workdir} holds a run trained on other data (recorded {recorded.get('path')}, SHA-256 "
        f"{str(recorded.get('sha256'))[:12]}...; now {data['path']}, SHA-256 {data['sha256'][:12]}...); point "
        "config.data_dir (or $TFT_FASHION_MNIST_DIR / $TFDS_DATA_DIR) at the recorded data to resume it, or use a "
        "new --workdir to train on this data."
    )


def file_sha256(path):
    """SHA-256 hex digest of the file at `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clear_manifest(members_dir):
    """Removes the manifest: the members are about to be (re)written."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(members_dir, MANIFEST_NAME))


def staging_dir(members_dir):
    """An empty folder inside `members_dir` where a run writes its outputs before `replace_outputs` moves them in."""
    path = os.path.join(members_dir, STAGING_NAME)
    shutil.rmtree(path, ignore_errors=True)  # left by a run that failed mid-write
    os.makedirs(path)
    return path


def replace_outputs(members_dir, moves):
    """Moves fully written outputs into place; a finished run's manifest goes only now.

    Until this call the run's previous members and manifest are untouched, so a
    rerun of a finished workdir that fails before it leaves the run finished.
    After it, the caller writes the new manifest.

    Args:
      members_dir: the run's members folder (its manifest is removed first:
        the files it lists are being replaced).
      moves: (staged path, final path) pairs, files or folders.
    """
    clear_manifest(members_dir)
    for staged, final in moves:
        if os.path.isdir(final) and not os.path.islink(final):
            shutil.rmtree(final)
        os.replace(staged, final)
    shutil.rmtree(os.path.join(members_dir, STAGING_NAME), ignore_errors=True)


def write_manifest(members_dir, paths):
    """Lists the member files `paths` (inside `members_dir`) with their sizes and SHA-256."""
    entries = []
    for path in paths:
        relative = os.path.relpath(path, members_dir)
        entries.append({"file": relative, "bytes": os.path.getsize(path), "sha256": file_sha256(path)})
    _atomic_write_json(os.path.join(members_dir, MANIFEST_NAME), {"members": entries})


def manifest_entries(members_dir):
    """{file name: (bytes, sha256)} of the manifest in `members_dir`; {} when there is none or it is damaged."""
    try:
        with open(os.path.join(members_dir, MANIFEST_NAME)) as f:
            entries = json.load(f)["members"]
        return {entry["file"]: (int(entry["bytes"]), str(entry["sha256"])) for entry in entries}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def is_run_workdir(path):
    """True when `path` is a training workdir of this library (it has a run record)."""
    return os.path.isfile(os.path.join(path, RECORD_NAME))


def manifest_members(workdir):
    """The member files a finished run in `workdir` wrote, checked against its manifest.

    Raises:
      WorkdirError: the run has not finished (no manifest), or a member file
        is missing, or differs from what the run wrote (size or SHA-256).
    """
    members_dir = os.path.join(workdir, "members")
    path = os.path.join(members_dir, MANIFEST_NAME)
    if not os.path.exists(path):
        raise WorkdirError(
            f"The run in {workdir} has not finished (no members/{MANIFEST_NAME}); rerun its train command to finish it."
        )
    try:
        with open(path) as f:
            entries = json.load(f)["members"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WorkdirError(f"{path} is damaged ({error}); rerun the train command on {workdir} to rewrite it.") from None
    paths = []
    for entry in entries:
        member = os.path.join(members_dir, entry["file"])
        if not os.path.isfile(member):
            raise WorkdirError(f"Member file {member} listed in {path} is missing.")
        size = os.path.getsize(member)
        if size != entry["bytes"] or file_sha256(member) != entry["sha256"]:
            raise WorkdirError(
                f"Member file {member} is damaged or was changed after training ({size} bytes, the run wrote "
                f"{entry['bytes']}, SHA-256 differs); its results cannot be trusted."
            )
        paths.append(member)
    return paths
