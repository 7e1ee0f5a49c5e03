export { NatsServerProcess } from '../../src/bus/nats-server.js';
