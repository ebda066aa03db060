"""The project's single Numba options point.

Every kernel is compiled through :func:`njit` from this module, never through a raw
``numba.njit(...)``: serial kernels are cached on disk (``cache=True``), never use
``fastmath`` (results must be bit-identical run to run) and release the GIL.

Where the cache lives (:data:`CACHE_DIR`): ``NUMBA_CACHE_DIR`` when it is set, else a per-user
folder, ``$XDG_CACHE_HOME/fabricsim/numba`` (``~/.cache/fabricsim/numba``; ``~/Library/Caches``
on macOS, ``%LOCALAPPDATA%`` on Windows). Never inside the installed package: Numba's own default
writes ``__pycache__`` folders beside the sources, files pip does not know about, which survive
``pip uninstall`` and then shadow a later editable install as a namespace package. The chosen
folder is exported as ``NUMBA_CACHE_DIR`` so that worker processes use the same one;
``fabricsim --version`` prints it. If no folder is writable, caching is switched off with a
warning instead of failing at import time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

__all__ = ["njit", "prefetch_row", "CACHE_ENABLED", "CACHE_DIR", "user_cache_dir"]


def user_cache_dir() -> str:
    """The per-user folder of fabricsim's Numba cache (the platform's user cache directory)."""
    if sys.platform == "win32":  # pragma: no cover - platform dependent
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
        return os.path.join(base, "fabricsim", "Cache", "numba")
    if sys.platform == "darwin":  # pragma: no cover - platform dependent
        return os.path.join(os.path.expanduser("~"), "Library", "Caches", "fabricsim", "numba")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fabricsim", "numba")


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


def _choose_cache_dir() -> str | None:
    """``NUMBA_CACHE_DIR`` if set, else the user cache folder, else a per-user temporary folder;
    None when none of them can be written."""
    given = os.environ.get("NUMBA_CACHE_DIR")
    if given:
        return given if _writable(given) else None
    uid = getattr(os, "getuid", lambda: "user")()
    for candidate in (user_cache_dir(), os.path.join(tempfile.gettempdir(), f"fabricsim-numba-{uid}")):
        if _writable(candidate):
            return candidate
    return None


CACHE_DIR = _choose_cache_dir()
CACHE_ENABLED = CACHE_DIR is not None
if CACHE_ENABLED and os.environ.get("NUMBA_CACHE_DIR") != CACHE_DIR:
    # Before Numba reads its configuration (imported below) or, if something imported it already,
    # re-read: the cache locator is chosen when each @njit kernel is defined, after this point.
    os.environ["NUMBA_CACHE_DIR"] = CACHE_DIR
    if "numba" in sys.modules:
        from numba.core import config as _numba_config

        _numba_config.reload_config()

import numba  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

if not CACHE_ENABLED:  # pragma: no cover - depends on the machine
    warnings.warn(
        "fabricsim: no writable Numba cache directory; kernels will be recompiled in every "
        "process. Set NUMBA_CACHE_DIR to a writable folder to cache them.",
        RuntimeWarning,
        stacklevel=2,
    )

_OPTIONS = dict(cache=CACHE_ENABLED, fastmath=False, nogil=True)


def njit(*args, refcount: bool = True, **kwargs):
    """``numba.njit`` with the project's options (cache, no fastmath, nogil).

    Usable bare (``@njit``) or with extra options (``@njit(inline="always")``).

    ``refcount=False`` compiles without Numba's runtime (its ``_nrt`` flag): no reference counting
    of the arrays a kernel handles. Every array variable copy and every call passing arrays costs
    an atomic increment and decrement; they took about 40% of the packet engine's event loop and
    30% of the flow engine's (benchmarks/README.md, P1 and B2). Such a kernel may only index, slice
    and pass the arrays it is given: Numba refuses to compile one that allocates (``np.empty``,
    ``np.sort``, ...). It may call kernels that allocate internally (they keep the runtime), but
    not ones that return a new array: nothing would free it.
    """
    options = dict(_OPTIONS)
    options.update(kwargs)
    # Always explicit: Numba otherwise compiles a callee with its caller's setting, and a kernel
    # that allocates must keep the runtime even when called from one compiled without it.
    options["_nrt"] = bool(refcount)
    if len(args) == 1 and callable(args[0]) and not kwargs and refcount:
        return numba.njit(**options)(args[0])
    return numba.njit(*args, **options)


@intrinsic
def prefetch_row(typingctx, arr, i):
    """``prefetch_row(a, i)``: ask the CPU to fetch the cache line of ``a[i, 0]`` (a 2-D array), for
    writing, without waiting for it. A hint only: no effect on results, and ``i`` is not checked
    (an address outside the array is harmless to prefetch). Used where the engine knows which row
    it will touch a few events later (the next packet of a link's queue, arrivals further down a
    pipe), to hide the cache misses that dominate large runs."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(i, types.Integer)):
        return None
    sig = types.void(arr, i)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer2(context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
                                        cgutils.unpack_tuple(builder, ary.strides), aryty.layout,
                                        [idx, context.get_constant(types.intp, 0)], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(1), i32(3), i32(1)])  # write, high locality, data
        return context.get_dummy_value()

    return sig, codegen
