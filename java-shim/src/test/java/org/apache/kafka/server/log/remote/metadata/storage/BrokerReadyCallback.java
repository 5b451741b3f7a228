package org.apache.kafka.server.log.remote.metadata.storage;

/**
 * Test stand-in for Kafka 4.2+'s broker-ready callback (KIP-1197), which neither Kafka line the unit tests run
 * against has in its storage-api jar. fasttier's RLMM finds the interface by name on its delegate.
 */
public interface BrokerReadyCallback {
    void onBrokerReady();
}
