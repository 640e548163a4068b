// Starts CongoDB, the in-memory MongoDB-wire server from @push.rocks/smartmongo 2.2.0,
// for the tests of MongoDB-backed resources (no genuine MongoDB installs on the test
// machines). setup.sh installs it; run it as `node server.mjs PORT` from the directory
// setup.sh prints. It prints "ready PORT" once it accepts connections and stops on
// SIGTERM or SIGINT.
//
// CongoDB serves the CRUD the Rust driver needs (insert, find with filter, sort, skip,
// limit and projection, $set/$inc updates, upserts, deletes, counts) but has no change
// streams, does not enforce unique indexes and does not roll back an aborted
// transaction: tests that need those cannot run against it.
import { CongoServer } from './smartmongo/dist_ts/congodb/index.js';

const port = Number(process.argv[2] ?? 27017);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`usage: node server.mjs PORT (got ${process.argv[2]})`);
  process.exit(2);
}
const server = new CongoServer({ port, host: '127.0.0.1' });
await server.start();
console.log(`ready ${port}`);
const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
