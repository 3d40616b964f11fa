#!/usr/bin/env python3
"""Checks that coroutine_fn means something.

Usage: check-coroutine-fn.py [--report-never-yields] [--expect-violations=N]
                             DIR...

A function that may yield is marked coroutine_fn and is only called from
coroutines.  This script reads every .c and .h file under the given
directories with a small C tokenizer (comments, strings and preprocessor
lines dropped), builds the call graph and fails (exit 1) when:

  (a) a function not marked coroutine_fn calls a coroutine_fn function by
      name, or calls a coroutine_fn function pointer member
      (drv->co_preadv(...), declared "int coroutine_fn (*co_preadv)(...)");
  (b) a coroutine_fn function is taken as a pointer anywhere but as an
      argument for a coroutine_fn pointer parameter (an entry bridge such
      as coroutine_create or aio_co_run_wait takes a CoroutineEntry *; a
      typedef marked coroutine_fn counts), into a coroutine_fn member
      (.co_preadv = f), or from a coroutine_fn into a coroutine_mixed_fn:
      whoever calls it through that pointer is not known to be a coroutine.

A coroutine_mixed_fn yields only when its caller is a coroutine: anyone may
call it, and it may call coroutine_fn code (it checks at run time).

The yield primitives of src/aio/coroutine.h are coroutine_fn themselves, so
(a) covers them.  With --report-never-yields it also lists coroutine_fn
functions that can never reach coroutine_yield (a report, never a failure).

--expect-violations=N turns the verdict around for the planted fixture
(tests/coroutine-fn/planted): exit 0 exactly when N violations are found.

Static functions resolve within their own file first, as the compiler does.
Macro bodies are not looked into.
"""
import os
import re
import sys

BRIDGES = {'coroutine_create', 'aio_co_run_wait', 'aio_co_run_start'}
# A coroutine's first frame: it calls the entry on the coroutine's own stack
# (and is itself reached through makecontext, not by a call).
FIRST_FRAMES = {'co_trampoline'}
YIELD_ROOT = 'coroutine_yield'
KEYWORDS = {
    'if', 'while', 'for', 'switch', 'return', 'sizeof', 'do', 'else',
    'case', 'goto', '__typeof__', 'typeof', '__attribute__', '_Alignof',
    '__builtin_offsetof', 'offsetof', '_Static_assert', 'defined',
    '__asm__', 'asm', '_Generic',
}

TOKEN = re.compile(r'[A-Za-z_]\w*|\d[\w.]*|->|\+\+|--|&&|\|\||[<>=!]=|\S')


def strip(text):
    """Drops comments, string/char literals and preprocessor lines."""
    out = []
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c in ' \t':
            out.append(c)
            i += 1
            continue
        if at_line_start and c == '#':
            # A directive, with its backslash continuations.
            while i < n and text[i] != '\n':
                if text[i] == '\\' and i + 1 < n and text[i + 1] == '\n':
                    i += 2
                    out.append('\n')
                    continue
                i += 1
            continue
        at_line_start = False
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append('\n' * text.count('\n', i, j) or ' ')
            i = j
        elif text.startswith('//', i):
            while i < n and text[i] != '\n':
                i += 1
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            out.append('0')
            i = j + 1
        else:
            if c == '\n':
                at_line_start = True
            out.append(c)
            i += 1
    return ''.join(out)


def tokenize(text):
    toks = []
    line = 1
    pos = 0
    for m in TOKEN.finditer(text):
        line += text.count('\n', pos, m.start())
        pos = m.start()
        toks.append((m.group(0), line))
    return toks


def matching(toks, i, open_, close):
    depth = 0
    for j in range(i, len(toks)):
        if toks[j][0] == open_:
            depth += 1
        elif toks[j][0] == close:
            depth -= 1
            if depth == 0:
                return j
    return len(toks) - 1


def open_paren(stmt, k):
    """Index of the '(' matching the ')' at stmt[k - 1] (-1 if none)."""
    depth, j = 0, k - 1
    while j >= 0:
        if stmt[j][0] == ')':
            depth += 1
        elif stmt[j][0] == '(':
            depth -= 1
            if depth == 0:
                break
        j -= 1
    return j


def declarator_name(stmt):
    """Name and specifiers of a function declarator, or None.

    stmt is the token list of a top-level declaration up to (not including)
    its ';' or '{'.  A function declarator ends in '( params )' (attributes
    after it are skipped) with the name just before the '('."""
    k = len(stmt)
    # Trailing __attribute__((...)) after the parameter list.
    while k >= 4 and stmt[k - 1][0] == ')':
        j = open_paren(stmt, k)
        if j < 1 or stmt[j - 1][0] != '__attribute__':
            break
        k = j - 1
    if k < 3 or stmt[k - 1][0] != ')':
        return None
    j = open_paren(stmt, k)
    if j < 1 or not re.match(r'[A-Za-z_]\w*$', stmt[j - 1][0]):
        return None
    name = stmt[j - 1][0]
    if name in KEYWORDS:
        return None
    specs = [t[0] for t in stmt[:j - 1]]
    params = [t[0] for t in stmt[j + 1:k - 1]]
    return name, specs, stmt[j - 1][1], params


class Func:
    def __init__(self, name, path, line, static, marked):
        self.name, self.path, self.line = name, path, line
        self.static, self.marked = static, marked
        self.calls = []        # (name, line)
        self.member_calls = []  # (member, line)
        self.refs = []         # (name, line, callee, member): value uses
        self.co_params = set()  # parameters of a coroutine_fn pointer type


class Tree:
    def __init__(self):
        self.defs = []              # Func
        self.marked = {}            # (scope, name) -> bool (any decl marked)
        self.mixed = {}             # (scope, name) -> coroutine_mixed_fn
        self.co_members = set()
        self.co_types = set()       # typedef void coroutine_fn T(...)
        self.typed_members = []     # (T, name) for "T *name;"
        self.takes_co = set(BRIDGES)  # has a coroutine_fn pointer parameter
        self.top_refs = []          # (path, name, line, ok)

    def scope(self, path, name, static):
        return (path if static else None, name)

    def note_decl(self, path, name, specs, params):
        for k, w in enumerate(params[:-1]):
            if (w in self.co_types and params[k + 1] == '*') or \
                    (w == 'coroutine_fn' and params[k + 1] == '('):
                self.takes_co.add(name)
        static = 'static' in specs
        key = self.scope(path, name, static)
        self.marked[key] = self.marked.get(key, False) or \
            'coroutine_fn' in specs
        self.mixed[key] = self.mixed.get(key, False) or \
            'coroutine_mixed_fn' in specs

    def is_mixed(self, path, name):
        if (path, name) in self.mixed:
            return self.mixed[(path, name)]
        return self.mixed.get((None, name), False)

    def is_marked(self, path, name):
        if (path, name) in self.marked:
            return self.marked[(path, name)]
        return self.marked.get((None, name), False)

    def known(self, path, name):
        return (path, name) in self.marked or (None, name) in self.marked


def scan_struct_members(toks, tree):
    """coroutine_fn ( * name ) anywhere: a coroutine_fn function pointer.
    T * name ; is one too when T turns out to be a coroutine_fn
    typedef (BlockDriverRwFn *co_preadv;): judged once all are read."""
    for i in range(len(toks) - 4):
        if toks[i][0] == 'coroutine_fn' and toks[i + 1][0] == '(' and \
                toks[i + 2][0] == '*':
            tree.co_members.add(toks[i + 3][0])
        if toks[i + 1][0] == '*' and toks[i + 3][0] == ';' and \
                re.match(r'[A-Za-z_]\w*$', toks[i][0]) and \
                re.match(r'[A-Za-z_]\w*$', toks[i + 2][0]):
            tree.typed_members.append((toks[i][0], toks[i + 2][0]))


def scan_body(toks, start, end, func):
    # Value uses are judged later, once every declaration is known: each
    # records the innermost call it is an argument of.
    """Calls, member calls and value references inside a function body."""
    frames = []   # callee name (or None) per open paren
    for i in range(start, end):
        t, line = toks[i]
        if t == '(':
            prev = toks[i - 1][0] if i > start else ''
            frames.append(prev if re.match(r'[A-Za-z_]\w*$', prev) else None)
            continue
        if t == ')':
            if frames:
                frames.pop()
            continue
        if not re.match(r'[A-Za-z_]\w*$', t) or t in KEYWORDS:
            continue
        prev = toks[i - 1][0]
        nxt = toks[i + 1][0] if i + 1 < end else ''
        if nxt == '(':
            if prev in ('->', '.'):
                func.member_calls.append((t, line))
            else:
                func.calls.append((t, line))
            continue
        if prev in ('->', '.'):
            continue
        # A value use.  Fine as a bridge argument or stored into a
        # coroutine_fn member (x->co_open = f / .co_open = f).
        callee = frames[-1] if frames else None
        member = toks[i - 2][0] if prev == '=' and i - 2 >= start else None
        func.refs.append((t, line, callee, member))


def scan_file(path, tree):
    with open(path, encoding='utf-8', errors='replace') as f:
        toks = tokenize(strip(f.read()))
    scan_struct_members(toks, tree)
    i, n = 0, len(toks)
    stmt = []
    while i < n:
        t = toks[i][0]
        if t == ';':
            d = declarator_name(stmt)
            if d and stmt[0][0] == 'typedef':
                if 'coroutine_fn' in d[1]:
                    tree.co_types.add(d[0])
            elif d:
                tree.note_decl(path, d[0], d[1], d[3])
            stmt = []
            i += 1
            continue
        if t == '{':
            d = declarator_name(stmt)
            end = matching(toks, i, '{', '}')
            if d and stmt[0][0] not in ('typedef', 'struct', 'enum', 'union'):
                name, specs, line, params = d
                tree.note_decl(path, name, specs, params)
                f = Func(name, path, line, 'static' in specs,
                         'coroutine_fn' in specs)
                f.co_params = {params[k + 2] for k in range(len(params) - 2)
                               if params[k] in tree.co_types and
                               params[k + 1] == '*'}
                scan_body(toks, i + 1, end, f)
                tree.defs.append(f)
                stmt = []
            elif stmt and stmt[-1][0] == '=':
                # An initializer: .member = function pointers in tables.
                for j in range(i + 1, end):
                    w = toks[j][0]
                    if re.match(r'[A-Za-z_]\w*$', w) and \
                            toks[j - 1][0] not in ('.', '->') and \
                            toks[j + 1][0] != '(':
                        member = toks[j - 2][0] if toks[j - 1][0] == '=' \
                            else None
                        tree.top_refs.append((path, w, toks[j][1], member))
                stmt = []
            else:
                # struct/enum/union body: keep its tokens out of the way, but
                # a declaration may follow ("struct X { } x;").
                stmt.append(('{}', toks[i][1]))
            i = end + 1
            continue
        stmt.append(toks[i])
        i += 1


def resolve_def(tree, path, name):
    best = None
    for f in tree.by_name.get(name, ()):
        if f.path == path and f.static:
            return f
        if not f.static:
            best = f
    return best


def check(dirs, report_never_yields):
    tree = Tree()
    files = []
    for d in dirs:
        for root, _, names in os.walk(d):
            for nm in sorted(names):
                if nm.endswith(('.c', '.h')):
                    files.append(os.path.join(root, nm))
    # Headers first, so their prototypes are known when .c files resolve.
    for p in sorted(files, key=lambda p: (not p.endswith('.h'), p)):
        scan_file(p, tree)
    tree.co_members |= {m for t, m in tree.typed_members
                        if t in tree.co_types}
    tree.by_name = {}
    for f in tree.defs:
        tree.by_name.setdefault(f.name, []).append(f)

    problems = []
    for f in tree.defs:
        marked = tree.is_marked(f.path, f.name) if not f.static else \
            tree.marked.get((f.path, f.name), False)
        f.marked = f.marked or marked
    for f in tree.defs:
        mixed = tree.is_mixed(f.path, f.name)
        if not f.marked and not mixed and f.name not in FIRST_FRAMES:
            for name, line in f.calls:
                if tree.is_marked(f.path, name):
                    problems.append(f'{f.path}:{line}: {f.name}() is not '
                                    f'coroutine_fn but calls coroutine_fn '
                                    f'{name}()')
            for member, line in f.member_calls:
                if member in tree.co_members:
                    problems.append(f'{f.path}:{line}: {f.name}() is not '
                                    f'coroutine_fn but calls coroutine_fn '
                                    f'member ->{member}()')
        for name, line, callee, member in f.refs:
            if callee in tree.takes_co or member in tree.co_members:
                continue
            # A mixed function calls what it is given in its caller's
            # context: from a coroutine_fn, a coroutine_fn callback is fine.
            if callee and f.marked and tree.is_mixed(f.path, callee):
                continue
            if tree.is_marked(f.path, name) and name != f.name:
                problems.append(f'{f.path}:{line}: coroutine_fn {name} taken '
                                f'as a pointer in {f.name}(), not passed to '
                                f'a coroutine_fn pointer parameter (an entry '
                                f'bridge such as coroutine_create)')
    for path, name, line, member in tree.top_refs:
        if member in tree.co_members:
            continue
        if tree.is_marked(path, name):
            problems.append(f'{path}:{line}: coroutine_fn {name} stored in '
                            f'.{member or "?"}, which is not a coroutine_fn '
                            f'member')

    for p in problems:
        print(p)

    if report_never_yields:
        yields = {}

        def may_yield(f, seen):
            key = (f.path, f.name)
            if key in yields:
                return yields[key]
            if key in seen:
                return False
            seen.add(key)
            r = any(m in tree.co_members for m, _ in f.member_calls)
            for name, _ in f.calls:
                if r:
                    break
                if name == YIELD_ROOT or name in f.co_params:
                    r = True
                    break
                g = resolve_def(tree, f.path, name)
                if g is not None and may_yield(g, seen):
                    r = True
            if r or not seen - {key}:
                yields[key] = r
            return r

        for f in tree.defs:
            if f.marked and f.name != YIELD_ROOT and not may_yield(f, set()):
                print(f'note: {f.path}:{f.line}: coroutine_fn {f.name}() '
                      f'never yields')

    return len(problems)


def main(argv):
    args = [a for a in argv if not a.startswith('--')]
    report = '--report-never-yields' in argv
    expect = [int(a.split('=', 1)[1]) for a in argv
              if a.startswith('--expect-violations=')]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    for d in args:
        if not os.path.isdir(d):
            print(f'check-coroutine-fn: {d}: not a directory', file=sys.stderr)
            return 2
    found = check(args, report)
    if expect:
        if found != expect[0]:
            print(f'check-coroutine-fn: expected {expect[0]} violations, '
                  f'found {found}', file=sys.stderr)
            return 1
        return 0
    if found:
        print('check-coroutine-fn: coroutine_fn violations found '
              '(see scripts/check-coroutine-fn.py)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
