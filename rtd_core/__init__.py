"""The ground package: configuration, the contract's constants and the clients' security
and Kafka reading that every other package shares. It imports no other package of the
project, so everything can stand on it, and the Flink workers ship it."""
