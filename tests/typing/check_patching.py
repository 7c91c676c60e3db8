"""Static checks of the patching API's types: run by mypy --strict in CI, never executed."""

from __future__ import annotations

import types

from typing_extensions import assert_type

import greenbridge


def check() -> None:
    assert_type(greenbridge.original("socket"), types.ModuleType)
    assert_type(greenbridge.is_patched("socket"), bool)
    assert_type(greenbridge.green_module_names(), tuple[str, ...])
    greenbridge.monkey_patch(thread=False, subprocess=False)
    greenbridge.monkey_patch(["socket", "ssl"], early_imports="error")
    greenbridge.monkey_patch(dns=True)  # type: ignore[call-arg]
    greenbridge.monkey_patch(thread=1)  # type: ignore[arg-type]
    greenbridge.monkey_patch(early_imports="loud")  # type: ignore[arg-type]
    with greenbridge.patch_blocking(socket=True, time=True):
        pass
    with greenbridge.patch_blocking(["time"]):
        pass
    warning: type[Warning] = greenbridge.PatchWarning
    assert warning
