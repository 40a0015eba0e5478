"""import_tasks(): imports the user's task modules (``--import``), so that their tasks are
registered. The registry, ``@task`` and :class:`TaskContext` live in their own modules."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from conveyor.errors import ConfigError


def import_tasks(specs: Iterable[str]) -> list[str]:
    """Import the modules that define tasks, by module name or by ``.py`` file path.

    ``mypackage.tasks`` is imported as usual (from ``sys.path``); ``path/to/file.py`` is
    loaded from that file. Importing a module twice is harmless.

    Returns:
        The names of the imported modules.

    Raises:
        ConfigError: a module is missing or fails while importing; the message names it.
    """
    imported: list[str] = []
    for spec in specs:
        try:
            if spec.endswith(".py") or "/" in spec:
                imported.append(_import_file(Path(spec)))
            else:
                importlib.import_module(spec)
                imported.append(spec)
        except ConfigError:
            raise
        except ModuleNotFoundError as exc:
            raise ConfigError(f"cannot import task module {spec!r}: {exc}") from exc
        except Exception as exc:
            raise ConfigError(
                f"task module {spec!r} failed while importing: {type(exc).__name__}: {exc}"
            ) from exc
    return imported


def _import_file(path: Path) -> str:
    resolved = path.resolve()
    if not resolved.is_file():
        raise ConfigError(f"cannot import task module {str(path)!r}: no such file")
    # A name unique to the file, so two files called tasks.py do not clash.
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    name = f"conveyor_tasks_{re.sub(r'[^0-9A-Za-z_]', '_', resolved.stem)}_{digest}"
    if name in sys.modules:
        return name
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"cannot import task module {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return name
