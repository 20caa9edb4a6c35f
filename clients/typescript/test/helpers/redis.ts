// Just enough of a Redis client (RESP over node:net) to check that Redis answers and to delete a
// test's keys afterwards, so the tests need no npm dependency and no redis-cli.

import { connect, type Socket } from "node:net";

type Reply = string | number | null | Reply[] | Error;

export class MiniRedis {
  readonly #socket: Socket;
  #buffer = Buffer.alloc(0);
  #waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  #failed: Error | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (data) => {
      this.#buffer = Buffer.concat([this.#buffer, data]);
      this.#drain();
    });
    const fail = (err: Error) => {
      this.#failed = err;
      for (const w of this.#waiting.splice(0)) w.reject(err);
    };
    socket.on("error", fail);
    socket.on("close", () => fail(new Error("redis connection closed")));
  }

  static connect(host: string, port: number, timeoutMs = 3000): Promise<MiniRedis> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no answer from Redis at ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot connect to Redis at ${host}:${port}: ${err.message}`));
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(new MiniRedis(socket));
      });
    });
  }

  command(...args: (string | number)[]): Promise<Reply> {
    if (this.#failed) return Promise.reject(this.#failed);
    const parts = args.map((a) => Buffer.from(String(a)));
    const wire = Buffer.concat([
      Buffer.from(`*${parts.length}\r\n`),
      ...parts.flatMap((p) => [Buffer.from(`$${p.length}\r\n`), p, Buffer.from("\r\n")]),
    ]);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#socket.write(wire);
    });
  }

  /** Deletes every key matching `pattern` (SCAN, then DEL in pages); returns how many. */
  async deleteMatching(pattern: string): Promise<number> {
    let cursor = "0";
    let deleted = 0;
    do {
      const reply = await this.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000);
      if (!Array.isArray(reply) || reply.length !== 2) throw new Error(`unexpected SCAN reply ${String(reply)}`);
      cursor = String(reply[0]);
      const keys = reply[1] as string[];
      if (keys.length > 0) deleted += Number(await this.command("DEL", ...keys));
    } while (cursor !== "0");
    return deleted;
  }

  close(): void {
    this.#socket.end();
  }

  #drain(): void {
    for (;;) {
      const parsed = parse(this.#buffer, 0);
      if (parsed === undefined) return;
      this.#buffer = this.#buffer.subarray(parsed.end);
      const waiter = this.#waiting.shift();
      if (!waiter) continue;
      if (parsed.value instanceof Error) waiter.reject(parsed.value);
      else waiter.resolve(parsed.value);
    }
  }
}

/** One reply from `buf` at `at`, or undefined when it has not fully arrived yet. */
function parse(buf: Buffer, at: number): { value: Reply; end: number } | undefined {
  const eol = buf.indexOf("\r\n", at);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[at] as number);
  const line = buf.toString("utf8", at + 1, eol);
  switch (type) {
    case "+":
      return { value: line, end: eol + 2 };
    case "-":
      return { value: new Error(line), end: eol + 2 };
    case ":":
      return { value: Number(line), end: eol + 2 };
    case "$": {
      const n = Number(line);
      if (n < 0) return { value: null, end: eol + 2 };
      if (buf.length < eol + 2 + n + 2) return undefined;
      return { value: buf.toString("utf8", eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
    }
    case "*": {
      const n = Number(line);
      if (n < 0) return { value: null, end: eol + 2 };
      const items: Reply[] = [];
      let end = eol + 2;
      for (let i = 0; i < n; i++) {
        const item = parse(buf, end);
        if (item === undefined) return undefined;
        items.push(item.value);
        end = item.end;
      }
      return { value: items, end };
    }
    default:
      throw new Error(`unexpected RESP reply type ${JSON.stringify(type)}`);
  }
}
