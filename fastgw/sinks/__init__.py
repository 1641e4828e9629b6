"""Completion sinks: where every completed exchange goes after its last byte (or its abort).

A request only appends its completed Exchange to the worker's pending list (~0.14 us); the worker hands
that list, as one batch, to each sink in turn (``fanout.CompletionSinks``) every ``CHUNK_RECORDS`` records
(in a callback after the iteration's writes) and every tick. Each sink owns a bounded queue and a drop
counter (``base.Backlog``), exported as ``fastgw_sink_dropped_total{sink}``, so a slow consumer never
stalls the data plane and never loses counts silently. One module per sink: ``metrics`` (counts, never
drops), ``access_log`` (JSON lines).
"""
