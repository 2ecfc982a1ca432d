"""The lazy post-import hook that makes `llamafactory-cli` see our registrations.

`vlmrecipes-autoload.pth` (in site-packages) calls `install()` at interpreter start. That only puts a small
finder on `sys.meta_path` (standard library only, well under a millisecond). When one of the modules in
`vlmrecipes.plugins.registry.HOOKS` is imported later (LLaMA-Factory's template module, its model list, ...),
the finder lets the real loader run and then calls the matching registration function. Nothing is
registered, and nothing heavy is imported, in a process that never imports LLaMA-Factory.

It also silences one known-harmless warning (`quiet_jieba_pkg_resources`).

Set `VLMR_NO_AUTOLOAD=1` to disable the hook for one process.
"""

from __future__ import annotations

import sys
import warnings  # already imported by the interpreter at start: free

# Filled by install(): target module name -> hook function. Imported lazily from the registry so that
# this module stays standard-library only.
_pending: dict[str, object] = {}
failures: dict[str, str] = {}  # target module -> traceback of a failed registration (read by `vlmr doctor`)


class _HookedLoader:  # duck-typed: importlib.abc costs ~8 ms to import
    """Delegates to the real loader, then runs the registration for `fullname`."""

    def __init__(self, loader, fullname: str):
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_hook(self._fullname)

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class PostImportFinder:
    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _HookedLoader(spec.loader, fullname)
                return spec
        return None


def _run_hook(fullname: str) -> None:
    hook = _pending.pop(fullname, None)
    if hook is None:
        return
    try:
        hook()
    except Exception:  # a broken plugin must not take LLaMA-Factory down with it; `vlmr doctor` reports it
        import traceback

        failures[fullname] = traceback.format_exc()
        print(
            f"[vlm-recipes] registration after importing {fullname} failed; run `vlmr doctor` for details.",
            file=sys.stderr,
        )


def quiet_jieba_pkg_resources() -> None:
    """Hide setuptools' "pkg_resources is deprecated" warning raised by jieba's `import pkg_resources`, only there.

    jieba 0.42.1 (its latest release; LLaMA-Factory's SFT metrics and our Chinese caption scoring import it) tries
    `import pkg_resources` to locate its dictionary, and falls back to its own folder when the import fails. From
    setuptools 81 that import warns on every command that imports jieba; when setuptools drops `pkg_resources`, the
    fallback takes over with the same dictionary. Nothing is wrong for our users, so the one message is filtered
    where jieba triggers it: pinning setuptools<81 would only quiet our own venv, not an environment the package
    is installed into, and a blanket filter would hide the warning from other packages' code.
    """
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning,
                            module=r"jieba\._compat$")


def install() -> None:
    """Idempotently put the finder on sys.meta_path; targets already imported are registered now."""
    if is_active():
        return
    quiet_jieba_pkg_resources()
    from vlmrecipes.plugins.registry import HOOKS  # a plain dict module: no third-party import

    _pending.update(HOOKS)
    sys.meta_path.insert(0, PostImportFinder())
    for name in list(_pending):
        if name in sys.modules:
            _run_hook(name)


def is_active() -> bool:
    return any(isinstance(f, PostImportFinder) for f in sys.meta_path)
