"""The local stack on loopback: Kafka (KRaft), a Flink standalone cluster, the model server."""
