#!/usr/bin/env python3
"""TEST INFRASTRUCTURE: reads a topic with confluent-kafka (librdkafka), an
independent Kafka client, and prints one JSON line per record:
{"partition": P, "offset": O, "key": base64|null, "value": base64}.

Stops when --count records were read or --timeout seconds passed (exit 1 then).
"""

import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"test-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([args.topic])
    records = 0
    deadline = time.monotonic() + args.timeout
    try:
        while records < args.count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                print(f"kafka error: {message.error()}", file=sys.stderr)
                continue
            key = message.key()
            print(json.dumps({
                "partition": message.partition(),
                "offset": message.offset(),
                "key": base64.b64encode(key).decode() if key is not None else None,
                "value": base64.b64encode(message.value() or b"").decode(),
            }), flush=True)
            records += 1
    finally:
        consumer.close()
    if records < args.count:
        print(f"only {records} of {args.count} records within {args.timeout}s", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
