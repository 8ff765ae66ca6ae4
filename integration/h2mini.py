"""A minimal cleartext HTTP/2 client (prior knowledge) for hostile request shapes that HTTP/1.1
cannot make, such as a request body followed by trailers. Only what the tests need: one
request per connection, header blocks sent as HPACK literals, and of the answer the `:status`
and the DATA bytes."""

import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, PADDED, PRIORITY = 0x1, 0x4, 0x8, 0x20

# HPACK static table entries for :status (RFC 7541 appendix A).
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
# Huffman codes of the digits (RFC 7541 appendix B): enough to read a literal :status.
DIGITS = {(0b00000, 5): "0", (0b00001, 5): "1", (0b00010, 5): "2", (0b011001, 6): "3", (0b011010, 6): "4",
          (0b011011, 6): "5", (0b011100, 6): "6", (0b011101, 6): "7", (0b011110, 6): "8", (0b011111, 6): "9"}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value):
    """A literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode() if isinstance(value, str) else value
    return b"\x00" + _int(len(n), 7) + n + _int(len(v), 7) + v


def _read_int(data, i, prefix_bits):
    limit = (1 << prefix_bits) - 1
    value = data[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        b = data[i]
        i += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _huffman_digits(raw):
    bits = "".join(f"{b:08b}" for b in raw)
    out, i = "", 0
    while i < len(bits):
        for length in (5, 6):
            code = bits[i : i + length]
            if len(code) == length and (int(code, 2), length) in DIGITS:
                out += DIGITS[(int(code, 2), length)]
                i += length
                break
        else:
            break  # padding (all ones)
    return out


def status_of(block):
    """`:status` of a response header block: the first field, indexed or literal with the
    indexed name 8."""
    first = block[0]
    if first & 0x80:
        return STATIC_STATUS.get(_read_int(block, 0, 7)[0])
    prefix = 6 if first & 0x40 else 4
    index, i = _read_int(block, 0, prefix)
    if index not in range(8, 15):
        return None
    huffman = block[i] & 0x80
    length, i = _read_int(block, i, 7)
    raw = block[i : i + length]
    return int(_huffman_digits(raw) if huffman else raw.decode())


class Answer:
    def __init__(self):
        self.status = None
        self.data = b""
        self.reset = False
        self.ended = False

    def __repr__(self):
        return f"<h2 {self.status} reset={self.reset} ended={self.ended} {self.data[:400]!r}>"


def request(port, headers, body_parts=(), trailers=None, timeout=5.0, pause=0.0):
    """Sends one request on stream 1: `headers` [(name, value)] (pseudo-headers first),
    `body_parts` DATA frames, then `trailers` [(name, value)] ending the stream (or the last
    DATA frame ends it). Reads until the stream ends, is reset, or `timeout`."""
    import time

    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(PREFACE + frame(SETTINGS, 0, 0))
        parts = list(body_parts)
        block = b"".join(literal(n, v) for n, v in headers)
        ends = not parts and trailers is None
        s.sendall(frame(HEADERS, END_HEADERS | (END_STREAM if ends else 0), 1, block))
        for k, part in enumerate(parts):
            if pause:
                time.sleep(pause)
            last = k == len(parts) - 1 and trailers is None
            s.sendall(frame(DATA, END_STREAM if last else 0, 1, part))
        if trailers is not None:
            if pause:
                time.sleep(pause)
            s.sendall(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"".join(literal(n, v) for n, v in trailers)))
        return _read(s, timeout)
    finally:
        s.close()


def _read(s, timeout):
    import time

    answer, buf, deadline = Answer(), b"", time.time() + timeout
    while time.time() < deadline:
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9 : 9 + length], buf[9 + length :]
            if kind == SETTINGS and not flags & 1:
                s.sendall(frame(SETTINGS, 1, 0))
            elif kind == PING and not flags & 1:
                s.sendall(frame(PING, 1, 0, payload))
            elif stream == 1 and kind in (HEADERS, DATA):
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if kind == HEADERS:
                    if flags & PRIORITY:
                        payload = payload[5:]
                    if answer.status is None:
                        answer.status = status_of(payload)
                else:
                    answer.data += payload
                    if payload:
                        s.sendall(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload))))
                if flags & END_STREAM:
                    answer.ended = True
                    return answer
            elif (kind == RST_STREAM and stream == 1) or kind == GOAWAY:
                answer.reset = True
                return answer
        try:
            s.settimeout(max(0.05, deadline - time.time()))
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
    return answer
