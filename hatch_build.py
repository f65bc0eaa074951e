"""Build hook: compile the ledger's C loops (src/immutrail/ledger/_native.c) into the wheel.

Hatchling builds pure-Python wheels; this hook adds the one extension module. It calls the C
compiler directly: one C file, linked against OpenSSL's libcrypto (the library behind hashlib),
needs no build system of its own. SQLite's header gives the types of the functions the module
looks up at run time in the SQLite library Python's sqlite3 module has loaded; it does not link
SQLite.

Without a C compiler or those headers (Debian: gcc, libssl-dev, libsqlite3-dev) the package
still builds and works: the ledger then runs the same loops in Python
(``immutrail.ledger.hashing``), slower. Set
``IMMUTRAIL_REQUIRE_NATIVE=1`` to make a failed compile fail the build instead (CI does).

An editable install (``uv sync``, ``pip install -e``) imports the package from ``src/``, so the
module is built there, next to its source (git-ignored); a regular wheel gets it from a
temporary folder.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = "src/immutrail/ledger/_native.c"
PACKAGE_DIR = "immutrail/ledger"
REQUIRE_ENV = "IMMUTRAIL_REQUIRE_NATIVE"


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        source = Path(self.root, SOURCE)
        name = "_native" + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        if version == "editable":
            target = source.with_name(name)
        else:
            self._scratch = tempfile.mkdtemp(prefix="immutrail-native-")
            target = Path(self._scratch, name)
        try:
            compile_extension(source, target)
        except (OSError, subprocess.CalledProcessError) as exc:
            if os.environ.get(REQUIRE_ENV) == "1":
                raise RuntimeError(f"{REQUIRE_ENV}=1 but the C extension did not build") from exc
            target.unlink(missing_ok=True)  # never leave a module older than its source
            detail = getattr(exc, "stderr", None) or str(exc)
            self.app.display_warning(
                f"immutrail: C extension not built: {detail.strip()[-2000:]}\n"
                "The ledger's hashing loops run in "
                "Python (slower). Install a C compiler and the OpenSSL and SQLite headers "
                "(Debian: gcc libssl-dev libsqlite3-dev) and reinstall to build it."
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = f"{PACKAGE_DIR}/{name}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def compile_extension(source: Path, target: Path) -> None:
    """Compile and link ``source`` into the shared module ``target``."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    partial = target.with_name(target.name + ".partial")
    command = [
        *compiler,
        "-shared",
        "-fPIC",
        "-O2",
        "-Wall",
        f"-I{include}",
        str(source),
        "-o",
        str(partial),
        "-lcrypto",
        "-ldl",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise subprocess.CalledProcessError(
            result.returncode, command, result.stdout, result.stderr
        )
    os.replace(partial, target)  # an importer never sees a half-written module
