package io.fasttier.testcontainers;

import java.util.Set;
import javax.management.MBeanAttributeInfo;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

/**
 * Prints the numeric attributes of the MBeans matching a pattern, one {@code object-name TAB attribute TAB value}
 * line each. Not for direct use: {@link FastTierKafkaContainer#pluginMetrics()} copies this class into the
 * broker's container and runs it there against the broker's container-local JMX port, so no JMX/RMI port has
 * to cross the container boundary.
 *
 * <p>Arguments: {@code host:port} of the JMX agent, then one or more object name patterns.
 */
public final class JmxDump {
    private JmxDump() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: JmxDump host:port pattern...");
            System.exit(2);
        }
        JMXServiceURL url = new JMXServiceURL("service:jmx:rmi:///jndi/rmi://" + args[0] + "/jmxrmi");
        JMXConnector connector = JMXConnectorFactory.connect(url);
        try {
            MBeanServerConnection server = connector.getMBeanServerConnection();
            StringBuilder out = new StringBuilder();
            for (int i = 1; i < args.length; i++) {
                Set<ObjectName> names = server.queryNames(new ObjectName(args[i]), null);
                for (ObjectName name : names) {
                    for (MBeanAttributeInfo attr : server.getMBeanInfo(name).getAttributes()) {
                        if (!attr.isReadable()) {
                            continue;
                        }
                        Object v;
                        try {
                            v = server.getAttribute(name, attr.getName());
                        } catch (Exception e) {
                            continue; // an attribute that cannot be read now: skip it
                        }
                        if (v instanceof Number) {
                            out.append(name).append('\t').append(attr.getName()).append('\t')
                                    .append(((Number) v).doubleValue()).append('\n');
                        }
                    }
                }
            }
            System.out.print(out);
        } finally {
            connector.close();
        }
    }
}
