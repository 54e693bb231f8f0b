#!/usr/bin/env python3
"""Compares the SASS of kernels between two sets of cuobjdump --dump-sass listings.

  scripts/sass_diff.py OLD.sass[,OLD2.sass...] NEW.sass[,NEW2.sass...] [--map FILE.py] [--show SUBSTR]

Each kernel's instruction stream is normalised (addresses, encodings and symbol names removed).
A kernel of NEW is matched to the kernel of OLD with the same demangled name (after the
optional renames of --map, a Python file defining `def canon(name: str) -> str`) and reported as
identical, or changed with the opcode counts that differ. Used to check that a refactor leaves the
tuned kernels' machine code as it was (a check that needs no GPU).
"""
import collections, difflib, re, subprocess, sys


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    return out.splitlines()


def kernels(paths):
    out = {}
    for path in paths.split(","):
        name, body = None, []
        for line in open(path, errors="replace"):
            m = re.search(r"Function : (\S+)", line)
            if m:
                if name:
                    out[name] = body
                name, body = m.group(1), []
                continue
            m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
            if m and name:
                ins = re.sub(r"`\([^)]*\)", "SYM", m.group(1))
                ins = re.sub(r"0x[0-9a-f]{6,}", "ADDR", ins)
                body.append(ins.strip())
        if name:
            out[name] = body
    names = list(out)
    return dict(zip(demangle(names), (out[n] for n in names)))


def opcodes(body):
    return collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", i).split(" ")[0] for i in body)


def main():
    args = sys.argv[1:]
    canon = lambda n: n
    show = None
    if "--map" in args:
        k = args.index("--map")
        ns = {}
        exec(open(args[k + 1]).read(), ns)
        canon = ns["canon"]
        del args[k:k + 2]
    if "--show" in args:
        k = args.index("--show")
        show = args[k + 1]
        del args[k:k + 2]
    old = {canon(n): b for n, b in kernels(args[0]).items()}
    new = {canon(n): b for n, b in kernels(args[1]).items()}
    same = changed = missing = 0
    for n, b in sorted(new.items()):
        if n not in old:
            missing += 1
            print(f"new     {n} ({len(b)} instructions)")
            continue
        if old[n] == b:
            same += 1
            continue
        changed += 1
        co, cn = opcodes(old[n]), opcodes(b)
        delta = {k: cn[k] - co[k] for k in set(co) | set(cn) if cn[k] != co[k]}
        print(f"changed {n}: {len(old[n])} -> {len(b)} instructions; {dict(sorted(delta.items()))}")
        if show and show in n:
            for l in difflib.unified_diff(old[n], b, lineterm="", n=1):
                print("   ", l)
    gone = [n for n in old if n not in new]
    print(f"{same} identical, {changed} changed, {missing} new, {len(gone)} gone")


if __name__ == "__main__":
    main()
