"""What the three binaries share: one-line errors with exit code 2, and quiet start-up.

A user mistake (a bad flag or config field, a missing or damaged file, a
workdir in use or holding another run, a diverged run) ends with one line
`error: ...` on stderr and exit code 2, never a traceback.
"""

import difflib
import re
import sys

EXIT_USER_ERROR = 2


def fail(message):
    """Prints `error: <message>` (its first line) on stderr and exits with code 2."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else type(message).__name__
    print(f"error: {first}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def user_errors():
    """Exception classes that mean "the user must change something", each reported in one line."""
    from tf_freetickets.data import DatasetError, MissingDatasetError
    from tf_freetickets.experiments.checkpointing import CheckpointError
    from tf_freetickets.experiments.config import ConfigError
    from tf_freetickets.experiments.guards import NonFiniteTrainingError
    from tf_freetickets.experiments.workdir import WorkdirError
    from tf_freetickets.sparse.structured import StructureError

    # FloatingPointError: a mask update refused NaN/Inf scores. StructureError: an N:M or block pattern
    # a layer cannot take (found when the model is built).
    return (
        ConfigError, DatasetError, MissingDatasetError, CheckpointError, NonFiniteTrainingError, WorkdirError,
        FloatingPointError, StructureError,
    )  # fmt: skip


def _config_field_error(error, argv):
    """One line for an unknown `--config.<field>`: the field as typed and the closest known one."""
    text = str(error).replace("\\'", "'").replace("\\n", "\n")
    key = re.search(r"'([^'\s]+)'", text)
    typed = next((a.split("=")[0][2:] for a in argv if key and a.startswith("--config.") and key.group(1) in a), None)
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    if typed and suggestion:
        prefix = typed.rsplit(".", 1)[0]
        return f"--{typed} is not a config field; did you mean --{prefix}.{suggestion.group(1)}?"
    if typed:
        return f"--{typed} is not a config field; `--config_help` lists them."
    return f"unknown config field ({text.strip().splitlines()[0]})"


def parse_flags(argv, config_flag_name=None):
    """absl `flags_parser` for `app.run`: bad flags and config files end in one line and exit 2.

    Args:
      argv: the command line.
      config_flag_name: name of the binary's ml_collections config flag, whose
        file is loaded here so that a missing or broken file fails in one line.
    """
    from absl import flags

    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        name = re.search(r"Unknown command line flag '([^']+)'", str(error))
        if name:
            known = [f for f in flags.FLAGS if not f.startswith("config.")]
            close = difflib.get_close_matches(name.group(1), known, n=1)
            fail(f"unknown flag --{name.group(1)}" + (f"; did you mean --{close[0]}?" if close else "."))
        fail(str(error))
    except (AttributeError, KeyError) as error:
        fail(_config_field_error(error, argv))
    except (OSError, ValueError, TypeError) as error:
        fail(f"bad flag value: {str(error).strip().splitlines()[0]}")
    if config_flag_name and flags.FLAGS[config_flag_name].present:
        try:
            getattr(flags.FLAGS, config_flag_name).keys()  # the file loads lazily, on first use
        except OSError as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = next((line for line in lines if line.startswith("[Errno")), lines[-1] if lines else "")
            fail(f"cannot load --{config_flag_name}={flags.FLAGS[config_flag_name].config_filename}: {reason}")
        except Exception as error:  # an exception inside the config file's get_config()
            fail(f"cannot load --{config_flag_name}: {type(error).__name__}: {error}")
    return remaining
