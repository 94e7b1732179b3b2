"""One dedupe scenario for every file sink (local directories and ``s3://`` prefixes): two replicas of the
load service, each with its own sink object, writing the batches of one run one after another, a
redelivery and a restart; the rows read back from the parts must hold each key once."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from shared.destinations import Sink

RUN = "run-dedupe"
KEYS = ["k", "day"]


def _batch(keys: range, tag: str) -> pa.Table:
    return pa.table(
        {
            "k": list(keys),
            "day": pa.array([k % 3 for k in keys], pa.int32()),
            "tag": [f"{tag}-{k}" for k in keys],
        }
    )


def check_dedupe_across_replicas(new_sink: Callable[[], Sink], read_keys: Callable[[], list[int]]) -> None:
    """``new_sink`` opens a sink on the destination (a replica, or a restart); ``read_keys`` reads every
    row's ``k`` back from the run's parts, independently of the sink."""
    a, b = new_sink(), new_sink()
    with_repeats = pa.concat_tables([_batch(range(0, 100), "a"), _batch(range(90, 100), "x")])
    wrote = a.write(RUN, "t:0", with_repeats, dedupe_keys=KEYS)
    assert (wrote.applied, wrote.rows_written, wrote.rows_deduplicated) == (True, 100, 10)
    wrote = b.write(RUN, "t:1", _batch(range(50, 150), "b"), dedupe_keys=KEYS)
    assert (wrote.applied, wrote.rows_written, wrote.rows_deduplicated) == (True, 50, 50)
    # replica a writes next: it must see the part replica b wrote since its own last batch
    wrote = a.write(RUN, "t:2", _batch(range(140, 200), "a"), dedupe_keys=KEYS)
    assert (wrote.applied, wrote.rows_written, wrote.rows_deduplicated) == (True, 50, 10)
    again = a.write(RUN, "t:1", _batch(range(50, 150), "b"), dedupe_keys=KEYS)  # a redelivery
    assert (again.applied, again.rows_written) == (False, 50)
    restarted = new_sink()
    wrote = restarted.write(RUN, "t:3", _batch(range(190, 210), "r"), dedupe_keys=KEYS)
    assert (wrote.applied, wrote.rows_written, wrote.rows_deduplicated) == (True, 10, 10)
    restarted.finalize(RUN)
    assert sorted(read_keys()) == list(range(210))  # every key exactly once
