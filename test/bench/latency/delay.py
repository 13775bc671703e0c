#!/usr/bin/env python3
"""Delay every packet of one netfilter queue by a fixed time.

This machine's kernel has no sch_netem, so `tc netem` cannot add latency.
iptables sends the packets from the bench nodes to an NFQUEUE (latency.ts
says why only the incoming ones); this program holds each packet for
DELAY_MS and then accepts it, in arrival order. Pure Python over a netlink
socket: no library needed.

usage: delay.py QUEUE_NUM DELAY_MS
Prints "ready" once bound; exits on SIGTERM/SIGINT.
"""
import collections
import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
SO_RCVBUFFORCE = 33


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack('=HH', n, kind) + payload + b'\0' * ((4 - n % 4) % 4)


def message(msg, queue, attrs, flags=NLM_F_REQUEST, seq=0):
    body = struct.pack('=BBH', socket.AF_UNSPEC, 0, socket.htons(queue)) + b''.join(attrs)
    return struct.pack('=IHHII', 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


def configure(sock, queue):
    reqs = [
        attr(NFQA_CFG_CMD, struct.pack('!BxH', NFQNL_CFG_CMD_BIND, socket.AF_INET)),
        attr(NFQA_CFG_PARAMS, struct.pack('!IB', 0, NFQNL_COPY_META)),
        attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack('!I', 65536)),
    ]
    for seq, a in enumerate(reqs, 1):
        sock.send(message(NFQNL_MSG_CONFIG, queue, [a], NLM_F_REQUEST | NLM_F_ACK, seq))
        data = sock.recv(65536)
        _, kind, _, _, _ = struct.unpack_from('=IHHII', data, 0)
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from('=i', data, 16)
            if err != 0:
                raise OSError(-err, f'nfqueue config step {seq}: {os.strerror(-err)}')


def packet_ids(data):
    off = 0
    while off + 16 <= len(data):
        length, kind, _, _, _ = struct.unpack_from('=IHHII', data, off)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + 20
            end = off + length
            while a + 4 <= end:
                alen, akind = struct.unpack_from('=HH', data, a)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    (pid,) = struct.unpack_from('!I', data, a + 4)
                    yield pid
                    break
                a += (alen + 3) & ~3
        off += (length + 3) & ~3


def main():
    queue = int(sys.argv[1])
    delay = float(sys.argv[2]) / 1000.0
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    sock.bind((0, 0))
    configure(sock, queue)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print('ready', flush=True)
    held = collections.deque()
    sock.setblocking(False)
    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, pid = held.popleft()
            sock.send(message(NFQNL_MSG_VERDICT, queue, [attr(NFQA_VERDICT_HDR, struct.pack('!II', NF_ACCEPT, pid))]))
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.5
        try:
            ready, _, _ = select.select([sock], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            continue
        while True:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as e:
                # ENOBUFS: the kernel dropped queued packets; TCP resends them.
                if e.errno == 105:
                    continue
                raise
            due = time.monotonic() + delay
            for pid in packet_ids(data):
                held.append((due, pid))
    # Release whatever is held so no connection hangs when the rules go.
    for _, pid in held:
        sock.send(message(NFQNL_MSG_VERDICT, queue, [attr(NFQA_VERDICT_HDR, struct.pack('!II', NF_ACCEPT, pid))]))


if __name__ == '__main__':
    main()
