"""Structure report: import cycles among product modules (imports inside functions
count), modules over 700 lines, functions over 60 lines."""
from __future__ import annotations
import ast, sys
from pathlib import Path

PACKAGES = ("firmware", "failover", "payments_cache", "hw")
ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else ".")

def modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path

def resolve(name, mods):
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None

def imports(mod, path, mods):
    tree = ast.parse(path.read_text())
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                r = resolve(a.name, mods)
                if r: out.add(r)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for a in node.names:
                r = resolve(f"{name}.{a.name}", mods) if name else None
                r = r if r and r != pkg and r.startswith(name) and r != name else resolve(name, mods)
                if r: out.add(r)
    out.discard(mod)
    return out

def sccs(graph):
    index, low, stack, on, res, i = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: res.append(sorted(comp))
    for v in graph:
        if v not in index: visit(v)
    return res

mods = dict(modules())
graph = {m: imports(m, p, mods) for m, p in mods.items()}
# a package's __init__ importing its own submodules is not a cycle through the package
for c in sccs(graph):
    print("CYCLE:", " ".join(c))
for m, p in mods.items():
    n = len(p.read_text().splitlines())
    if n > 700: print(f"LONG MODULE: {p} {n}")
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            ln = node.end_lineno - node.lineno + 1
            if ln > 60: print(f"LONG FUNCTION: {p}:{node.lineno} {node.name} {ln}")
