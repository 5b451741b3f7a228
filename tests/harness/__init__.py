"""fasttier end-to-end test harness: real S3 (MinIO) and real Kafka brokers as child processes."""
from .kafka import BrokerExited, KafkaCluster, plugin_available, plugin_dir, plugin_jars
from .procs import HarnessError, TimeoutExpired, free_port, free_ports, live_processes, wait_until
from .s3 import S3Server

__all__ = [
    "HarnessError", "TimeoutExpired", "free_port", "free_ports", "wait_until", "live_processes",
    "S3Server", "KafkaCluster", "BrokerExited", "plugin_available", "plugin_dir", "plugin_jars",
]
