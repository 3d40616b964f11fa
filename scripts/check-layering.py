#!/usr/bin/python3
"""Checks that src/ keeps the layer order of the design map.

    scripts/check-layering.py [SRC]      (SRC defaults to src/ beside us)

Two rules, each reported as "file:line: what":

  (a) drivers behind one table: no file outside src/block/drivers/ includes
      a driver's header or names what one declares (driver tables such as
      bdrv_qcow2, its functions, types and macros).  The block layer and
      everything above reach a driver through BlockDriver and
      bdrv_find_driver() only.
  (b) layers: an #include "dir/..." may only point at a layer the including
      folder may use:
          util <- aio <- object <- block <- job;  nbd uses object and
          block, not job;  export uses block;  qmp may use object, block,
          job, nbd, export;  daemon anything;  ctl only util.

Before checking SRC it checks itself: a small tree with one planted
violation of each kind must fail, and the same tree without them must
pass.  Exit status 0 only when both hold.  Run as the meson test
'layering'.
"""

import os
import re
import sys
import tempfile

DRIVERS = 'block/drivers'

# What each folder of src/ may include besides itself and config.h.
MAY_USE = {
    'util': set(),
    'aio': {'util'},
    'object': {'util', 'aio'},
    'block': {'util', 'aio', 'object'},
    DRIVERS: {'util', 'aio', 'object', 'block'},
    'job': {'util', 'aio', 'block'},
    'nbd': {'util', 'aio', 'object', 'block'},
    'export': {'util', 'aio', 'block'},
    'qmp': {'util', 'aio', 'object', 'block', 'job', 'nbd', 'export'},
    'daemon': None,       # anything
    'ctl': {'util'},
}

# Known exceptions, each with its reason: (file under src/, what it names:
# a header path or a symbol).  Keep this short; an entry is a debt.
ALLOWED = set()

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# Names a driver header declares: prototypes and extern objects (the word
# before "(" or ";" on a line that starts a declaration), typedef names,
# macros.
DECL_FN = re.compile(r'^(?:static[ \t]+inline[ \t]+|extern[ \t]+)?'
                     r'[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)[ \t]*\(', re.M)
DECL_EXTERN = re.compile(r'^extern[ \t][^;(\n]*?\b([A-Za-z_]\w*)[ \t]*'
                         r'(?:\[\])?[ \t]*;', re.M)
DECL_TYPE = re.compile(r'^(?:typedef[ \t][\w \t\*]*?\b|\}[ \t]*)'
                       r'([A-Za-z_]\w*)[ \t]*;', re.M)
DECL_MACRO = re.compile(r'^#\s*define\s+([A-Za-z_]\w*)', re.M)
WORD = re.compile(r'[A-Za-z_]\w*')
KEYWORDS = {'if', 'while', 'for', 'switch', 'return', 'sizeof', 'defined'}


def strip_comments_and_strings(text):
    """Blanks comments and string literals, keeping line numbers."""
    def blank(m):
        return re.sub(r'[^\n]', ' ', m.group(0))
    return re.sub(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|'
                  r"'(?:\\.|[^'\\\n])*'", blank, text, flags=re.S)


def folder_of(rel):
    """The layer a path under src/ belongs to."""
    if rel.startswith(DRIVERS + '/'):
        return DRIVERS
    return rel.split('/', 1)[0]


def sources(src):
    for root, _, files in os.walk(src):
        for f in sorted(files):
            if f.endswith(('.c', '.h')):
                path = os.path.join(root, f)
                yield os.path.relpath(path, src), path


def driver_names(src):
    """Every name the headers under src/block/drivers/ declare."""
    names = set()
    for rel, path in sources(src):
        if folder_of(rel) != DRIVERS or not rel.endswith('.h'):
            continue
        text = strip_comments_and_strings(open(path).read())
        for rx in (DECL_FN, DECL_EXTERN, DECL_TYPE, DECL_MACRO):
            names.update(rx.findall(text))
    names -= KEYWORDS
    # Include guards are not names anyone uses.
    return {n for n in names if not n.startswith('BJ_BLOCK_DRIVERS')}


def check(src):
    """Returns the violations in src as 'file:line: message' strings."""
    problems = []
    names = driver_names(src)
    for rel, path in sources(src):
        layer = folder_of(rel)
        text = open(path).read()
        allowed_here = {what for f, what in ALLOWED if f == rel}
        exempt = set()            # names declared by allowed headers
        for m in INCLUDE.finditer(text):
            inc = m.group(1)
            line = text.count('\n', 0, m.start()) + 1
            if '/' not in inc:
                continue          # same folder, or config.h at the top
            target = folder_of(inc)
            if target not in MAY_USE:
                continue
            if target == DRIVERS and layer != DRIVERS:
                if inc in allowed_here:
                    hdr = os.path.join(src, inc)
                    if os.path.exists(hdr):
                        exempt |= names_in(hdr)
                    continue
                problems.append('%s:%d: includes driver header "%s" '
                                '(use BlockDriver entries)' % (rel, line, inc))
                continue
            if target == DRIVERS:
                target = 'block'
            base = DRIVERS if layer == DRIVERS else layer
            may = MAY_USE.get(base)
            if may is None or target == layer or target in may or \
               (layer == DRIVERS and target == 'block'):
                continue
            if inc in allowed_here:
                continue
            problems.append('%s:%d: %s/ may not include "%s" (layer order: '
                            'see DESIGN.md)' % (rel, line, layer, inc))
        if layer == DRIVERS:
            continue
        code = strip_comments_and_strings(text)
        for m in WORD.finditer(code):
            w = m.group(0)
            if w in names and w not in exempt and w not in allowed_here:
                line = code.count('\n', 0, m.start()) + 1
                problems.append('%s:%d: names driver symbol %s (reach the '
                                'driver through BlockDriver)' % (rel, line, w))
    return problems


def names_in(header):
    text = strip_comments_and_strings(open(header).read())
    found = set()
    for rx in (DECL_FN, DECL_EXTERN, DECL_TYPE, DECL_MACRO):
        found.update(rx.findall(text))
    return found


SELF_TEST_TREE = {
    'util/u.h': '#include <stdint.h>\n',
    'aio/a.c': '#include "util/u.h"\n',
    'block/block.h': '#include "aio/a.h"\n'
                     'const BlockDriver *bdrv_find_driver(const char *n);\n',
    'block/drivers/drivers.h': 'extern const BlockDriver bdrv_thing;\n',
    'block/drivers/thing.h': 'int thing_co_frob(BlockNode *bs);\n'
                             'typedef struct ThingState ThingState;\n',
    'block/drivers/thing.c': '#include "block/drivers/drivers.h"\n'
                             '#include "block/drivers/thing.h"\n'
                             '#include "block/block.h"\n',
    'job/j.c': '#include "block/block.h"\n'
               '/* bdrv_thing in a comment is fine */\n'
               'static const char *s = "thing_co_frob";\n',
    'nbd/n.c': '#include "block/block.h"\n',
    'qmp/q.c': '#include "job/j.h"\n#include "nbd/n.h"\n',
    'ctl/c.c': '#include "util/u.h"\n',
}
# Each planted violation, and the words its message must contain.
SELF_TEST_BAD = [
    ('job/j.c', '#include "block/drivers/thing.h"\n', 'driver header'),
    ('block/b.c', 'int x(void) { return bdrv_thing.n; }\n',
     'driver symbol bdrv_thing'),
    ('qmp/q.c', 'ThingState *st;\n', 'driver symbol ThingState'),
    ('nbd/n.c', '#include "job/j.h"\n', 'may not include'),
    ('block/b.c', '#include "job/j.h"\n', 'may not include'),
    ('ctl/c.c', '#include "block/block.h"\n', 'may not include'),
    ('block/drivers/thing.c', '#include "qmp/q.h"\n', 'may not include'),
]


def write_tree(root, extra=None):
    files = dict(SELF_TEST_TREE)
    if extra:
        f, text = extra
        files[f] = files.get(f, '') + text
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as fh:
            fh.write(text)


def self_test():
    """True when the checker passes a clean tree and catches each plant."""
    ok = True
    with tempfile.TemporaryDirectory(prefix='check-layering-') as tmp:
        clean = os.path.join(tmp, 'clean')
        write_tree(clean)
        found = check(clean)
        if found:
            print('self-test: clean tree reported: %s' % found)
            ok = False
        for i, (f, text, words) in enumerate(SELF_TEST_BAD):
            root = os.path.join(tmp, 'bad%d' % i)
            write_tree(root, (f, text))
            found = check(root)
            if not any(words in p for p in found):
                print('self-test: planted %r in %s not caught (got %s)'
                      % (text.strip(), f, found))
                ok = False
    return ok


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, '..',
                                                             'src')
    if not self_test():
        print('check-layering: the checker itself is broken')
        return 1
    problems = check(src)
    for p in problems:
        print(p)
    if problems:
        print('check-layering: %d violation(s)' % len(problems))
        return 1
    print('check-layering: ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())
