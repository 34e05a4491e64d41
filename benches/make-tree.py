"""Writes N files of 2 KiB random bytes into 50 directories under ROOT
(the tree of issue 17's P8 and issue 13's P9): make-tree.py ROOT N"""
import os
import sys

root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"dir{i % 50:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(2048))
