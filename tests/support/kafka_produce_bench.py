#!/usr/bin/env python3
"""BENCHMARK PEER: produces the agent's own Kafka record values again with
confluent-kafka (librdkafka), for the produce benchmark to compare CPU time.

--values names a file of records, each a 4-byte big-endian length, a 4-byte
big-endian flow count and the value. The values are produced in order, over and
over, until --flows flows went out, then flushed. Prints one JSON line:
{"flows": F, "records": R, "cpu_seconds": S, "delivery_errors": E}, where S is
this process's user and system time over the produce loop and the flush (every
librdkafka thread included, and the Python loop, about a microsecond a record).
"""

import argparse
import json
import resource
import struct
import sys

from confluent_kafka import Producer


def read_values(path):
    values = []
    with open(path, "rb") as file:
        data = file.read()
    offset = 0
    while offset < len(data):
        length, flows = struct.unpack_from(">II", data, offset)
        offset += 8
        values.append((data[offset:offset + length], flows))
        offset += length
    return values


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--values", required=True)
    parser.add_argument("--flows", type=int, required=True)
    parser.add_argument("--compression", required=True)
    parser.add_argument("--linger-ms", type=int, required=True)
    parser.add_argument("--batch-bytes", type=int, required=True)
    args = parser.parse_args()

    values = read_values(args.values)
    if not values:
        sys.exit("no values to produce")
    errors = []
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "compression.type": args.compression,
        "linger.ms": args.linger_ms,
        "batch.size": args.batch_bytes,
        "message.max.bytes": max(args.batch_bytes, 1_000_000) + 1024,
        "acks": "all",
        "queue.buffering.max.kbytes": 1 << 20,
    })

    def delivered(error, _message):
        if error is not None:
            errors.append(str(error))

    # One round first, flushed: connections and metadata are not what is measured.
    for value, _ in values:
        producer.produce(args.topic, value=value, partition=0, on_delivery=delivered)
    producer.flush(60)

    start = cpu_seconds()
    flows = records = 0
    while flows < args.flows:
        for value, count in values:
            while True:
                try:
                    producer.produce(args.topic, value=value, partition=0, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.001)
            producer.poll(0)
            flows += count
            records += 1
    left = producer.flush(120)
    spent = cpu_seconds() - start
    if left:
        errors.append(f"{left} records not delivered by the flush deadline")
    print(json.dumps({
        "flows": flows,
        "records": records,
        "cpu_seconds": spent,
        "delivery_errors": len(errors),
        "first_error": errors[0] if errors else None,
    }))


if __name__ == "__main__":
    main()
