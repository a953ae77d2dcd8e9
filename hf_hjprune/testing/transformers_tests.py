"""transformers' own common model tests, taken from the source distribution of the installed version.

The transformers wheel ships no tests, but its source distribution (sdist) holds
`tests/test_modeling_common.py` (`ModelTesterMixin`, the checks every transformers model passes) and
`tests/test_configuration_common.py` (`ConfigTester`). `load_common_tests` downloads that sdist once
with pip into a cache outside the repository, extracts these two files and imports them as a
package, so the conformance tests run transformers' code, never a copy of it.

The two files import a few sibling test modules that the sdist does not contain. They are replaced
by empty stand-ins (`NOT_SHIPPED`): the tests those modules hold (transformers' `torch.export`
mixin, the generation mixin, the common config kwargs) are absent, never faked.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import transformers

COMMON_TEST_FILES = ("test_modeling_common.py", "test_configuration_common.py")
# Sibling modules imported by the two files but absent from the sdist, and the names they provide.
NOT_SHIPPED = {
    "exporters.test_export": ("ExportTesterMixin",),  # transformers' torch.export tests
    "generation.test_utils": ("GenerationTesterMixin",),  # generate() tests (not for these models)
    "utils.test_configuration_utils": ("config_common_kwargs",),  # ConfigTester.check_config_arguments_init
}


class CommonTestsUnavailable(RuntimeError):
    """transformers' common tests could not be fetched or imported (offline, dev version, ...)."""


@dataclass(frozen=True)
class CommonTests:
    """The imported test modules: `modeling.ModelTesterMixin`, `configuration.ConfigTester`, ..."""

    version: str
    directory: Path
    modeling: types.ModuleType
    configuration: types.ModuleType


def default_cache_dir() -> Path:
    """`$HF_HJPRUNE_CACHE`, else `$XDG_CACHE_HOME/hf_hjprune`, else `~/.cache/hf_hjprune`."""
    if os.environ.get("HF_HJPRUNE_CACHE"):
        return Path(os.environ["HF_HJPRUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hf_hjprune"


def fetch_common_tests(
    version: str | None = None, cache_dir: Path | None = None, timeout: float = 300
) -> Path:
    """The directory holding the common test files of transformers `version` (default: installed).

    Downloaded with `pip download --no-binary :all: transformers==version` on first use (it goes
    through the pip configuration: index, proxy, certificates) and kept in `cache_dir`.
    """
    version = version or transformers.__version__
    target = (cache_dir or default_cache_dir()) / f"transformers-{version}" / "tests"
    if all((target / name).is_file() for name in COMMON_TEST_FILES):
        return target
    if ".dev" in version:
        raise CommonTestsUnavailable(
            f"transformers {version} is a development version: no sdist on the index"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        command += ["--dest", scratch, f"transformers=={version}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise CommonTestsUnavailable(f"`{' '.join(command)}` took over {timeout:.0f} s") from error
        sdists = list(Path(scratch).glob("transformers-*.tar.gz"))
        if result.returncode or not sdists:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no sdist downloaded"]
            raise CommonTestsUnavailable(f"`{' '.join(command)}` failed: {detail[0]}")
        extracted = Path(scratch) / "tests"
        extracted.mkdir()
        with tarfile.open(sdists[0]) as sdist:
            for name in COMMON_TEST_FILES:
                member = sdist.extractfile(f"{sdists[0].name.removesuffix('.tar.gz')}/tests/{name}")
                if member is None:
                    raise CommonTestsUnavailable(f"{sdists[0].name} has no tests/{name}")
                (extracted / name).write_bytes(member.read())
        # `test_configuration_common` runs the package's `__init__.py` through `direct_transformers_import`.
        (extracted / "__init__.py").write_text("")
        shutil.rmtree(target, ignore_errors=True)
        extracted.rename(target)  # atomic: a half-extracted cache never looks complete
    return target


def load_common_tests(version: str | None = None, cache_dir: Path | None = None) -> CommonTests:
    """Import `ModelTesterMixin` and `ConfigTester` of transformers `version` (default: installed).

    Raises `CommonTestsUnavailable` when they cannot be fetched or imported.
    """
    version = version or transformers.__version__
    directory = fetch_common_tests(version, cache_dir)
    package = "_transformers_common_tests_" + version.replace(".", "_")
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            package, directory / "__init__.py", submodule_search_locations=[str(directory)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
        for name, attributes in NOT_SHIPPED.items():
            _stand_in(f"{package}.{name}", attributes)
    try:
        modeling = importlib.import_module(f"{package}.test_modeling_common")
        configuration = importlib.import_module(f"{package}.test_configuration_common")
    except ImportError as error:  # e.g. a test dependency such as `parameterized` is missing
        raise CommonTestsUnavailable(f"cannot import transformers' common tests: {error}") from error
    return CommonTests(version, directory, modeling, configuration)


class NotShipped:
    """Stands for a name whose module is not in the sdist: using it raises, so nothing passes vacuously."""

    def __init__(self, name: str):
        self.name = name

    def _unavailable(self, *args, **kwargs):
        raise CommonTestsUnavailable(f"{self.name} is not in the transformers source distribution")

    __iter__ = __getitem__ = __deepcopy__ = __call__ = keys = items = _unavailable


def _stand_in(module_name: str, attributes: tuple[str, ...]) -> None:
    parent = module_name.rpartition(".")[0]
    if parent not in sys.modules:
        sys.modules[parent] = types.ModuleType(parent)
    module = types.ModuleType(module_name, "Stand-in: this module is not in the transformers sdist.")
    for attribute in attributes:
        # Mixins must be classes (`ModelTesterMixin` subclasses one); the others raise when used.
        value = type(attribute, (), {}) if attribute.endswith("Mixin") else NotShipped(attribute)
        setattr(module, attribute, value)
    sys.modules[module_name] = module
