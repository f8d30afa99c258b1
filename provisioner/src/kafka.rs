//! The versioned Kafka topic: created with the operator's settings, kept in line, never shrunk.
