// The nats-server the tests start lives with the product: the Mixer embeds the same one.
export { findNatsServer, NatsServerError, NatsServerProcess } from '../../src/bus/nats-server.js';
