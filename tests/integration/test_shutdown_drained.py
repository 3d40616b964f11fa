"""Shutting down while a drained section holds client writes back.

A write an NBD client sent while its node was drained is queued, not lost; a
quit (or SIGTERM) that arrives while x-debug-drain-begin is still open must
end that section, let the queued writes land, and exit 0 — not hang waiting
for requests that can never run.
"""
import signal
import time

import pytest

from bjtest import qemu_io
from test_nbd import add_disk, connect, start_server


@pytest.mark.blockjobd_only('x-debug-drain-begin is ours')
@pytest.mark.parametrize('how', ['quit', 'SIGTERM'])
def test_shutdown_with_debug_drain_open(daemon_factory, tmp_path, how):
    img = tmp_path / 'sd.raw'
    d = daemon_factory()
    add_disk(d, img)
    start_server(d)
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='disk',
                  writable=True)
    h = connect(d)
    d.qmp.execute('x-debug-drain-begin', node_name='disk')
    cookies = [h.aio_pwrite(bytes([0x60 + i]) * 4096, i * 4096)
               for i in range(8)]
    time.sleep(0.3)
    h.poll(0)
    assert h.aio_in_flight() == 8, 'a write completed inside the drain'

    start = time.monotonic()
    if how == 'quit':
        d.stop()
    else:
        d.send_signal(signal.SIGTERM)
        d.wait(30)
        d.check(0)
    assert time.monotonic() - start < 20, 'shutdown waited on the drain'

    # Every queued write was applied before the image was closed.
    for i in range(8):
        qemu_io('-f', 'raw', '-c', 'read -P %d %d 4096' % (0x60 + i, i * 4096),
                str(img))
    del cookies
