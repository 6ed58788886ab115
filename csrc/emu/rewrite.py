"""Rewrites a CUDA source into C++ for the CPU emulation of csrc/emu/cuda_emu.h.

Only three constructs of CUDA are not C++ and cannot be mapped by macros, so this rewrite touches
exactly these, leaving every other character of the kernels as written (and every line where it was:
errors and barrier sites name the .cu file's own lines through a #line directive):

  kernel<<<grid, block, smem, stream>>>(args)
      -> ::deephash_emu::launch("kernel", kernel, grid, block, smem, stream)(args)
  __shared__ T a[N], b[M];                      (static shared memory: per-block storage)
      -> auto& a = ::deephash_emu::shared<T[N]>(site, "a"); auto& b = ...;
  extern __shared__ [__align__(n)] T s[];       (dynamic shared memory: the launch's buffer)
      -> T* const s = ::deephash_emu::dynamic_shared<T>();
  TORCH_LIBRARY_IMPL(deephash_ext, CUDA, m)     (the kernels register for the emu device)
      -> TORCH_LIBRARY_IMPL(deephash_ext, PrivateUse1, m)

Doing this at build time, rather than by macros in the .cu files, keeps the sources and the nvcc build
untouched. `python csrc/emu/rewrite.py in.cu out.cpp` rewrites one file; setup.py and the mutation tests
import rewrite().
"""
import re
import sys

_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


class RewriteError(ValueError):
    pass


def _line(src, pos):
    return src.count("\n", 0, pos) + 1


def _match_close(src, i, open_ch, close_ch):
    """Index just past the bracket that closes src[i] == open_ch (parentheses nest; quotes are skipped)."""
    depth = 0
    j = i
    while j < len(src):
        c = src[j]
        if c in "\"'":
            q = c
            j += 1
            while j < len(src) and src[j] != q:
                j += 2 if src[j] == "\\" else 1
        elif c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise RewriteError(f"unbalanced {open_ch!r} from line {_line(src, i)}")


def _kernel_start(src, end):
    """Start of the kernel expression that ends at src[end - 1]: a (qualified) name with template arguments."""
    j = end
    while j > 0 and src[j - 1].isspace():
        j -= 1
    if src[j - 1] == ">":  # template arguments: walk back to the matching '<'
        depth = 0
        k = j - 1
        while k >= 0:
            if src[k] == ">":
                depth += 1
            elif src[k] == "<":
                depth -= 1
                if depth == 0:
                    break
            k -= 1
        j = k
    k = j
    while k > 0 and (src[k - 1].isalnum() or src[k - 1] in "_:"):
        k -= 1
    if k == j:
        raise RewriteError(f"no kernel name before <<< on line {_line(src, end)}")
    return k


def _rewrite_launches(src):
    out = []
    pos = 0
    while True:
        i = src.find("<<<", pos)
        if i < 0:
            out.append(src[pos:])
            return "".join(out)
        start = _kernel_start(src, i)
        kernel = src[start:i].rstrip()
        base = _IDENT.findall(kernel.split("<")[0])[-1]
        close = src.find(">>>", i)
        if close < 0:
            raise RewriteError(f"<<< without >>> on line {_line(src, i)}")
        config = src[i + 3:close]
        j = close + 3
        while src[j].isspace():
            j += 1
        if src[j] != "(":
            raise RewriteError(f"no argument list after >>> on line {_line(src, close)}")
        out.append(src[pos:start])
        out.append(f'::deephash_emu::launch("{base}", {kernel}, {config})')
        pos = close + 3


_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?(?P<type>[A-Za-z_][\w:\s]*?)\s+(?P<name>\w+)\s*\[\s*\]\s*;")
_STATIC_SHARED = re.compile(r"__shared__\s+(?P<decl>[^;]+);")
# The first declarator carries the type: `unsigned long long name[N][M]`.
_FIRST = re.compile(r"^\s*(?P<type>[A-Za-z_][\w:<>\s]*?)\s+(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]+\]\s*)*)$")
_DECLARATOR = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]+\]\s*)*)$")


def _rewrite_shared(src):
    src = _EXTERN_SHARED.sub(
        lambda m: f"{m['type'].strip()}* const {m['name']} = ::deephash_emu::dynamic_shared<{m['type'].strip()}>();",
        src)

    def static(m):
        pieces = []
        first, *rest = m["decl"].split(",")
        f = _FIRST.match(first)
        if not f:
            raise RewriteError(f"cannot read the __shared__ declaration {m['decl'].strip()!r}")
        type_ = re.sub(r"\s+", " ", f["type"].strip())
        for i, decl in enumerate([first] + rest):
            d = f if i == 0 else _DECLARATOR.match(decl)
            if not d:
                raise RewriteError(f"cannot read the __shared__ declarator {decl.strip()!r}")
            dims = re.sub(r"\s+", "", d["dims"])
            name = d["name"]
            # A function-local static per declaration and template instance: the handle of its storage.
            pieces.append(f"static ::deephash_emu::SharedSite dh_emu_site_{name}; "
                          f"auto& {name} = dh_emu_site_{name}.get<{type_}{dims}>(\"{name}\");")
        return " ".join(pieces)

    out = _STATIC_SHARED.sub(static, src)
    if "__shared__" in out:
        line = _line(out, out.index("__shared__"))
        raise RewriteError(f"a __shared__ declaration this rewrite does not read, line {line}")
    return out


_LIBRARY_IMPL = re.compile(r"TORCH_LIBRARY_IMPL\(\s*deephash_ext\s*,\s*CUDA\s*,")


def rewrite(src, path="kernel.cu"):
    """The C++ text of CUDA source `src` (read from `path`, which the #line directive names)."""
    body = _rewrite_shared(_rewrite_launches(src))
    body = _LIBRARY_IMPL.sub("TORCH_LIBRARY_IMPL(deephash_ext, PrivateUse1,", body)
    return f'#include "emu/cuda_emu.h"\n#line 1 "{path}"\n{body}'


def main(argv):
    src_path, out_path = argv[1], argv[2]
    with open(src_path) as f:
        text = rewrite(f.read(), src_path)
    with open(out_path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv)
