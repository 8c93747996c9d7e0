"""Runs every expression on fixed data and prints one hash per (expression, engine).

Used by test_determinism.py in subprocesses with different POLARS_MAX_THREADS.
"""

import hashlib
import sys

import polars as pl
from support import clip_like, frame

import polars_curate as pc

x, t = clip_like(3000, 48, seed=3)
target, _ = clip_like(400, 48, seed=4)
df = frame("f16", img=x, txt=t).with_columns(g=pl.int_range(3000) % 3)
# Many small chunks.
df = pl.concat([df[i : i + 250] for i in range(0, 3000, 250)], rechunk=False)
exprs = {
    "clip": pc.clip_score("img", "txt"),
    "ncl": pc.neg_clip_loss("img", "txt", batch_size=700, num_batches=3, seed=1),
    "ncl_over": pc.neg_clip_loss("img", "txt", batch_size=300, num_batches=2).over("g"),
    "ns2": pc.normsim("img", target, p=2),
    "nsinf": pc.normsim("img", target, p="inf"),
    "ns3": pc.normsim("img", target, p=3),
    "scs": pc.soft_cap_sample(pc.clip_score("img", "txt"), 9000, batch=700, alpha=0.3, seed=2),
    "hcs": pc.hard_cap_sample(pc.clip_score("img", "txt") * 5, 7000, limit=4, seed=2),
}
for engine in ("in-memory", "streaming"):
    out = df.lazy().select(**exprs).collect(engine=engine)
    for name in exprs:
        digest = hashlib.sha256(out[name].to_numpy().tobytes()).hexdigest()[:16]
        print(name, digest)
    sys.stdout.flush()
