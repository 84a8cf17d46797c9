/** `greeting-client.ts HOST PORT`: connects, sends nothing until the server speaks, then says QUIT and prints {greeting, rest} as JSON. */
export {};
const [hostname, port] = process.argv.slice(2);
let text = "";
let greeted!: () => void;
const greeting = new Promise<void>((resolve) => (greeted = resolve));
let closed!: () => void;
const done = new Promise<void>((resolve) => (closed = resolve));
const sock = await Bun.connect<undefined>({
  hostname: hostname!,
  port: Number(port),
  allowHalfOpen: true,
  socket: {
    data: (_s, chunk) => {
      text += chunk.toString();
      if (text.endsWith("\r\n")) greeted();
    },
    // A server that never speaks: the timer's cut ends the wait too.
    close: () => (greeted(), closed()),
    error: () => (greeted(), closed()),
  },
});
const timer = setTimeout(() => sock.terminate(), 5000);
await greeting;
const first = text;
sock.write("QUIT\r\n");
sock.shutdown();
await done;
clearTimeout(timer);
console.log(JSON.stringify({ greeting: first, rest: text.slice(first.length) }));
