"""A toy trainer for `privagg client --train`, with the Python standard library only.

Usage: toy_train.py MODEL UPDATE CLIENT

Client CLIENT holds data whose best model is its own target vector; one "epoch" moves
halfway from the global model to it. The update written is new model - global model,
so FedAvg of the clients' updates moves the global model halfway to the mean target
each round.
"""

import ast
import math
import struct
import sys


def read_npy(path):
    data = open(path, "rb").read()
    if data[:6] != b"\x93NUMPY":
        raise SystemExit(f"{path} is not a .npy file")
    if data[6] == 1:
        (length,), start = struct.unpack("<H", data[8:10]), 10
    else:
        (length,), start = struct.unpack("<I", data[8:12]), 12
    header = ast.literal_eval(data[start : start + length].decode("latin1"))
    (n,) = header["shape"]
    fmt = {"<f4": "f", "<f8": "d"}[header["descr"]]
    body = data[start + length :]
    return list(struct.unpack(f"<{n}{fmt}", body[: n * struct.calcsize(fmt)]))


def write_npy(path, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % len(values)
    pad = 64 - (10 + len(header) + 1) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
        f.write(struct.pack(f"<{len(values)}f", *values))


def target(client, dim):
    return [math.sin((client * dim + j) * 0.37) for j in range(dim)]


if __name__ == "__main__":
    model_path, update_path, client = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = read_npy(model_path)
    goal = target(client, len(model))
    write_npy(update_path, [0.5 * (g - m) for g, m in zip(goal, model)])
