"""A training workdir that cannot mix, share or misreport runs.

Three files guard a workdir (WORKDIR below):
- `run_record.json`: the resolved config and the package version of the run
  the workdir holds, written before its first epoch. Rerunning on the
  workdir with another config is refused with one line naming the differing
  fields, instead of resuming one run's checkpoints under another's config.
- `run.lock`: an exclusive `fcntl.flock` held while a run trains, so a second
  process on the same workdir stops at once. The kernel drops the lock when
  its process dies (even by kill -9), so a killed run never blocks its resume.
- `members/manifest.json`: the member files the run wrote, with their sizes
  and SHA-256, written when every member is saved. `evaluate` and
  `export_main` read exactly these (never a glob of `members/`), and refuse
  a run without a manifest (unfinished) or with a changed or damaged file.
  A rerun of a finished workdir keeps its manifest until the new members are
  fully written (in `members/.staging/`, then moved into place).
"""

import contextlib
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


@contextlib.contextmanager
def exclusive_lock(workdir):
    """Holds an exclusive lock on `workdir` for the `with` block.

    Raises:
      WorkdirError: another live process holds it (its pid is named).
    """
    path = os.path.join(workdir, LOCK_NAME)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
            f"(in {path}) to resume it, or {fresh_start}."
        )
    return True


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


def write_record(workdir, config):
    """Records `config` and the package version as the run `workdir` holds."""
    _atomic_write_json(os.path.join(workdir, RECORD_NAME), {"package_version": package_version(), "config": _normalised(config)})


def _sha256(path):
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
        entries.append({"file": relative, "bytes": os.path.getsize(path), "sha256": _sha256(path)})
    _atomic_write_json(os.path.join(members_dir, MANIFEST_NAME), {"members": entries})


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
        if size != entry["bytes"] or _sha256(member) != entry["sha256"]:
            raise WorkdirError(
                f"Member file {member} is damaged or was changed after training ({size} bytes, the run wrote "
                f"{entry['bytes']}, SHA-256 differs); its results cannot be trusted."
            )
        paths.append(member)
    return paths
