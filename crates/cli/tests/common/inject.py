#!/usr/bin/env python3
"""Sends the frames of a pcap file out of DEV, one send() each, in order.

Usage: inject.py DEV FILE.pcap

The kernel tests use it in place of netsniff-ng's TX ring, whose flush failed
now and then (EINVAL) and whose ring size must be a power of two: one
AF_PACKET socket and one send per frame keep the order and report every error.
"""
import socket
import struct
import sys


def main() -> int:
    dev, path = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        end = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        end = ">"
    else:
        print(f"{path}: not a pcap file", file=sys.stderr)
        return 1
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((dev, 0))
    off, n = 24, 0
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(end + "IIII", data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        if s.send(frame) != len(frame):
            print(f"{dev}: short send of frame {n}", file=sys.stderr)
            return 1
        n += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
