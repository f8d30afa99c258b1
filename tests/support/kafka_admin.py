#!/usr/bin/env python3
"""TEST INFRASTRUCTURE: an independent view of a Kafka topic through confluent-kafka
(librdkafka), for checking what flow-provisioner did. Prints one JSON object.

  topics                          {"topics": [names]} (listing all creates nothing)
  describe --topic T              {"partitions": N, "replication_factor": R, "config": {k: v}}
  set-config --topic T k=v ...    adds topic overrides (IncrementalAlterConfigs SET)
  commit --topic T --group G p=o ...   commits offsets for group G with a consumer
"""

import argparse
import json
import sys

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)


def describe(admin, topic):
    metadata = admin.list_topics(topic=None, timeout=20)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        print(f"topic {topic} not found: {found and found.error}", file=sys.stderr)
        sys.exit(1)
    replicas = max((len(p.replicas) for p in found.partitions.values()), default=0)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=20)
    return {
        "partitions": len(found.partitions),
        "replication_factor": replicas,
        "config": {name: entry.value for name, entry in configs.items()},
    }


def set_config(admin, topic, pairs):
    entries = []
    for pair in pairs:
        name, value = pair.split("=", 1)
        entries.append(ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET))
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    admin.incremental_alter_configs([resource])[resource].result(timeout=20)
    return {"set": pairs}


def commit(bootstrap, topic, group, pairs):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    try:
        offsets = []
        for pair in pairs:
            partition, offset = pair.split("=", 1)
            offsets.append(TopicPartition(topic, int(partition), int(offset)))
        committed = consumer.commit(offsets=offsets, asynchronous=False)
        failed = [tp for tp in committed if tp.error is not None]
        if failed:
            print(f"commit failed: {failed}", file=sys.stderr)
            sys.exit(1)
        return {"committed": {str(tp.partition): tp.offset for tp in committed}}
    finally:
        consumer.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["topics", "describe", "set-config", "commit"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic")
    parser.add_argument("--group")
    parser.add_argument("--ca-file", help="TLS to the brokers, trusting this CA")
    parser.add_argument("pairs", nargs="*")
    args = parser.parse_intermixed_args()
    if args.command == "commit":
        result = commit(args.bootstrap, args.topic, args.group, args.pairs)
    else:
        settings = {"bootstrap.servers": args.bootstrap}
        if args.ca_file:
            settings.update({"security.protocol": "SSL", "ssl.ca.location": args.ca_file})
        admin = AdminClient(settings)
        if args.command == "topics":
            result = {"topics": sorted(admin.list_topics(timeout=20).topics)}
        elif args.command == "describe":
            result = describe(admin, args.topic)
        else:
            result = set_config(admin, args.topic, args.pairs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
