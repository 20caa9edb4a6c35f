// What the Python interop tests ask of real Node BullMQ: one command per run, JSON in, JSON out.
//
//   node bullmq_tool.mjs '<json request>'
//
// request: {"redis": {"host", "port", "db"}, "prefix", "queue", "command", ...}
//   job      {"jobId"}                         -> the job as Node reads it (job.toJSON() and its state)
//   retry    {"jobId", "state"?, "opts"?}      -> job.retry(state, opts), as bull-board's Retry does;
//                                                 prints the job before and after
//   workers  {}                                -> queue.getWorkers() (what bull-board lists)
//   add      {"name", "data", "opts"}          -> queue.add(name, data, opts)
//   add-many {"name", "data", "opts", "count", "intervalMs"}
//                                              -> `count` adds, one every `intervalMs`: ids and timestamps
import { Queue, Job } from 'bullmq';
import IORedis from 'ioredis';

const req = JSON.parse(process.argv[2]);
const connection = new IORedis({ host: '127.0.0.1', port: 6379, ...(req.redis || {}), maxRetriesPerRequest: null });
const queue = new Queue(req.queue, { connection, prefix: req.prefix });

async function describe(jobId) {
  const job = await Job.fromId(queue, jobId);
  if (!job) return null;
  // The raw hash too: which fields a retry deletes is what the Python worker can see.
  const raw = await connection.hgetall(`${req.prefix}:${req.queue}:${jobId}`);
  return { json: job.toJSON(), state: await job.getState(), attemptsStarted: job.attemptsStarted,
           stalledCounter: job.stalledCounter, raw };
}

async function main() {
  switch (req.command) {
    case 'job':
      return describe(req.jobId);
    case 'retry': {
      const before = await describe(req.jobId);
      const job = await Job.fromId(queue, req.jobId);
      await job.retry(req.state || 'failed', req.opts || {});
      return { before, after: await describe(req.jobId) };
    }
    case 'workers':
      return { workers: await queue.getWorkers(), clientName: queue.clientName() };
    case 'add': {
      const job = await queue.add(req.name, req.data, req.opts || {});
      return { id: job.id, timestamp: job.timestamp };
    }
    case 'add-many': {
      const added = [];
      for (let i = 0; i < req.count; i++) {
        const job = await queue.add(req.name, { ...req.data, n: i }, req.opts || {});
        added.push({ id: job.id, timestamp: job.timestamp });
        if (req.intervalMs) await new Promise(resolve => setTimeout(resolve, req.intervalMs));
      }
      return { added };
    }
    default:
      throw new Error(`unknown command ${req.command}`);
  }
}

try {
  process.stdout.write(JSON.stringify(await main()) + '\n');
} catch (err) {
  process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
} finally {
  await queue.close();
  await connection.quit();
}
