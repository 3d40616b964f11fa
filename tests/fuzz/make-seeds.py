#!/usr/bin/python3
"""Writes the hand-made seed inputs of the fuzz corpora (corpus/<target>/
seed-*).  Seeds are starting points: the fuzzer's own finds are merged in
next to them by scripts/fuzz.sh.  qcow2 seeds are made by qemu-img and
qemu-io with 512-byte clusters so each image stays a few KiB.

    tests/fuzz/make-seeds.py [TARGET...]
"""
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, 'corpus')


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'seed-' + name), 'wb') as f:
        f.write(data)


# ---- NBD ----
IHAVEOPT = 0x49484156454F5054
OPT = dict(EXPORT_NAME=1, ABORT=2, LIST=3, STARTTLS=5, INFO=6, GO=7,
           STRUCTURED_REPLY=8, LIST_META_CONTEXT=9, SET_META_CONTEXT=10)


def opt(code, data=b''):
    return struct.pack('>QII', IHAVEOPT, code, len(data)) + data


def info(code, name):
    n = name.encode()
    return opt(code, struct.pack('>I', len(n)) + n +
               struct.pack('>HHHH', 3, 1, 2, 3))


def meta(code, name, *queries):
    n = name.encode()
    body = struct.pack('>I', len(n)) + n + struct.pack('>I', len(queries))
    for q in queries:
        body += struct.pack('>I', len(q)) + q.encode()
    return opt(code, body)


def nbd_handshake():
    t = 'nbd-handshake'
    flags = struct.pack('>I', 3)    # FIXED_NEWSTYLE | NO_ZEROES
    write(t, 'go-all', bytes([16]) + flags + opt(OPT['STRUCTURED_REPLY']) +
          meta(OPT['LIST_META_CONTEXT'], 'disk', 'base:') +
          meta(OPT['SET_META_CONTEXT'], 'disk', 'base:allocation',
               'qemu:dirty-bitmap:b') +
          info(OPT['INFO'], 'disk') + opt(OPT['LIST']) +
          info(OPT['GO'], 'disk'))
    write(t, 'export-name', bytes([3]) + struct.pack('>I', 1) +
          opt(12345, b'abc') + opt(OPT['EXPORT_NAME']))
    write(t, 'unknown-abort', bytes([64]) + struct.pack('>I', 1) +
          info(OPT['GO'], 'nope') + opt(OPT['STARTTLS']) + opt(OPT['ABORT']))
    write(t, 'oldstyle', bytes([1]) + struct.pack('>I', 0) +
          opt(OPT['EXPORT_NAME'], b'disk'))
    write(t, 'shutdown', bytes([0x81]) + flags + info(OPT['GO'], ''))


REQ_MAGIC = 0x25609513
CMD = dict(READ=0, WRITE=1, DISC=2, FLUSH=3, TRIM=4, CACHE=5,
           WRITE_ZEROES=6, BLOCK_STATUS=7)


def req(cmd, off, length, flags=0, payload=b''):
    return struct.pack('>IHHQQI', REQ_MAGIC, flags, CMD[cmd], 0x1234, off,
                       length) + payload


def params(size, tflags, meta, min_shift):
    # size (u64), shift, tflags (u16), structured/meta bits, min block shift
    return struct.pack('>QBHBB', size, 0, tflags, meta, min_shift) + bytes(3)


def nbd_request():
    t = 'nbd-request'
    every = 0x1 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80 | 0x800   # + FAST_ZERO
    write(t, 'rw', params(1 << 20, every, 3, 9) +
          req('READ', 0, 4096) + req('WRITE', 512, 512, 1, b'\xab' * 512) +
          req('FLUSH', 0, 0) + req('TRIM', 4096, 8192) +
          req('WRITE_ZEROES', 0, 1 << 20, 2) +
          req('BLOCK_STATUS', 0, 1 << 20, 8) + req('CACHE', 0, 4096) +
          req('DISC', 0, 0))
    write(t, 'readonly', params(1 << 20, every | 0x2, 1, 0) +
          req('WRITE', 0, 1) + b'x' + req('READ', (1 << 20) - 1, 2) +
          req('READ', 0, 0, 4))
    write(t, 'simple', params(65536, 1, 0, 0) +
          req('BLOCK_STATUS', 0, 512) + req('WRITE', 0, 0x2000001))


# ---- QMP ----
def qmp_json_stream():
    t = 'qmp-json-stream'

    def write(t, name, data, chunk=7, limits=0):
        # two control bytes: chunk size, limits (see the harness)
        globals()['write'](t, name, bytes([chunk, limits]) + data)
    write(t, 'greeting', b'{"execute": "qmp_capabilities"}\r\n'
          b'{"execute":"query-version","id":1}')
    write(t, 'single-quotes', b"{'execute': 'query-block-jobs', "
          b"'arguments': {}, 'id': 'a\\'b'}")
    write(t, 'reset', b'{"a": [1, 2, \xff{"b": "\\u00e9\\n"} [] 3 "x" ')
    write(t, 'nested', b'[' * 40 + b'{"k": -1.5e10}' + b']' * 40, 1, 3)
    write(t, 'bad', b'}{"x": tru} {"y": "\\ud800"} nul')


def cmd(execute, **args):
    m = {'execute': execute}
    if args:
        m['arguments'] = args
    return json.dumps(m).encode()


def qmp_command():
    t = 'qmp-command'
    write(t, 'blockdev-add', cmd(
        'blockdev-add', **{'driver': 'qcow2', 'node-name': 'q',
                           'file': {'driver': 'file', 'filename': '/x',
                                    'aio': 'io_uring'},
                           'read-only': True, 'discard': 'unmap'}))
    write(t, 'backup', cmd(
        'blockdev-backup', **{'job-id': 'j', 'device': 'd', 'target': 't',
                              'sync': 'incremental', 'bitmap': 'b',
                              'speed': 100, 'on-source-error': 'stop'}))
    write(t, 'mirror', cmd(
        'blockdev-mirror', **{'device': 'd', 'target': 't', 'sync': 'full',
                              'granularity': 65536, 'copy-mode':
                              'write-blocking', 'auto-finalize': False}))
    write(t, 'nbd', cmd(
        'nbd-server-start', addr={'type': 'unix',
                                  'data': {'path': '/tmp/s'}}))
    write(t, 'export', cmd(
        'block-export-add', **{'type': 'nbd', 'id': 'e', 'node-name': 'n',
                               'writable': True, 'bitmaps': ['b']}))
    write(t, 'bitmap-merge', cmd(
        'block-dirty-bitmap-merge', node='n', target='b',
        bitmaps=['a', {'node': 'm', 'name': 'c'}]))
    write(t, 'transaction', cmd(
        'transaction', actions=[{'type': 'block-dirty-bitmap-add',
                                 'data': {'node': 'n', 'name': 'b'}}],
        properties={'completion-mode': 'grouped'}))
    write(t, 'create', cmd(
        'blockdev-create', **{'job-id': 'c', 'options': {
            'driver': 'qcow2', 'file': 'f', 'size': 1048576,
            'cluster-size': 512, 'backing-file': 'b'}}))
    write(t, 'query', cmd('query-named-block-nodes', flat=True))
    write(t, 'job', cmd('job-dismiss', id='j'))
    # n0: the node the harness keeps (null-co, 1 MiB)
    write(t, 'bitmap-add-n0', cmd(
        'block-dirty-bitmap-add', node='n0', name='b', granularity=65536,
        persistent=False, disabled=True))
    write(t, 'bitmap-merge-n0', cmd(
        'block-dirty-bitmap-merge', node='n0', target='n0',
        bitmaps=['b']))
    write(t, 'drain-n0', cmd('x-debug-drain-begin', **{'node-name': 'n0'}))
    write(t, 'del-n0', cmd('blockdev-del', **{'node-name': 'n0'}))
    write(t, 'export-n0', cmd(
        'block-export-add', **{'type': 'nbd', 'id': 'e', 'node-name': 'n0',
                               'bitmaps': ['b'], 'allocation-depth': True}))


def keyval():
    t = 'keyval'

    def write(t, name, data, implied=1):
        # byte 0: the implied key (see the harness; 1 is --blockdev's)
        globals()['write'](t, name, bytes([implied]) + data)

    write(t, 'dotted', b'driver=qcow2,node-name=q,file.driver=file,'
          b'file.filename=/tmp/a,,b.img,read-only=on,cache.direct=off')
    write(t, 'implied', b'nbd,id=e,node-name=n,bitmaps.0=a,bitmaps.1=b', 2)
    write(t, 'json', b'{"driver": "raw", "file": {"driver": "null-co", '
          b'"size": 1048576}}')
    write(t, 'addr', b'addr.type=unix,addr.path=/tmp/nbd.sock,'
          b'max-connections=4', 0)
    write(t, 'bad', b'a.b=1,a=2,,=,.x=,')


# ---- qcow2 ----
def no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(*cmd_, crashes=False):
    # crashes: the command ends in qemu-io's abort (a simulated crash)
    subprocess.run(cmd_, check=not crashes, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL if crashes else None,
                   preexec_fn=no_core)


def qcow2_image(tmp, name, size, opts, io=(), bitmaps=()):
    p = os.path.join(tmp, name)
    run('qemu-img', 'create', '-q', '-u', '-f', 'qcow2', '-o', opts, p,
        size)
    for b in bitmaps:
        run('qemu-img', 'bitmap', '--add', *b[:-1], p, b[-1])
    if io:
        args = []
        for c in io:
            args += ['-c', c]
        run('qemu-io', '-f', 'qcow2', *args, p, crashes='abort' in io)
    with open(p, 'rb') as f:
        return f.read()


def qcow2(targets):
    with tempfile.TemporaryDirectory() as tmp:
        c512 = 'cluster_size=512'
        imgs = {
            'v3': qcow2_image(tmp, 'a', '64K', c512),
            'v2-backing': qcow2_image(
                tmp, 'b', '32K', c512 + ',compat=0.10,backing_file=base,'
                'backing_fmt=raw'),
            'data': qcow2_image(
                tmp, 'c', '64K', c512,
                io=('write -P 1 0 1536', 'write -z 4096 1024',
                    'write -P 2 60K 4K', 'discard 512 512')),
            'refcount1': qcow2_image(
                tmp, 'd', '32K', c512 + ',refcount_bits=1',
                io=('write -P 3 0 2048',)),
            'refcount64-lazy': qcow2_image(
                tmp, 'e', '32K', c512 + ',refcount_bits=64,'
                'lazy_refcounts=on', io=('write -P 4 1024 1024',)),
            # qemu-io's abort leaves the dirty bit: refcounts are repaired
            'dirty-lazy': qcow2_image(
                tmp, 'i', '32K', c512 + ',lazy_refcounts=on',
                io=('write -P 7 0 4K', 'write -P 8 20K 1K', 'abort')),
            'compressed': qcow2_image(
                tmp, 'f', '16K', c512, io=('write -c -P 5 0 512',)),
        }
        bm = {
            'bitmaps': qcow2_image(
                tmp, 'g', '64K', c512, bitmaps=(('-g', '512', 'fine'),
                                                ('coarse',)),
                io=('write -P 6 0 512', 'write 40K 8K')),
            'bitmap-dirty': qcow2_image(
                tmp, 'h', '32K', c512, bitmaps=(('off',),), io=('write 0 4K',)),
        }
        for t in targets:
            if t == 'qcow2-bitmap-dir':
                for k, v in {**bm, 'v3': imgs['v3']}.items():
                    write(t, k, v)
            else:
                for k, v in imgs.items():
                    write(t, k, v)
                if t != 'qcow2-header':
                    write(t, 'bitmaps', bm['bitmaps'])


GENERATORS = {
    'nbd-handshake': nbd_handshake,
    'nbd-request': nbd_request,
    'qmp-json-stream': qmp_json_stream,
    'qmp-command': qmp_command,
    'keyval': keyval,
}
QCOW2 = ['qcow2-header', 'qcow2-l1l2', 'qcow2-refcount', 'qcow2-bitmap-dir']


def main():
    targets = sys.argv[1:] or list(GENERATORS) + QCOW2
    for t in targets:
        if t in GENERATORS:
            GENERATORS[t]()
        elif t not in QCOW2:
            sys.exit('unknown target ' + t)
    qcow2([t for t in targets if t in QCOW2])


if __name__ == '__main__':
    main()
