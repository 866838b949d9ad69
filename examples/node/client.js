#!/usr/bin/env node
// A lorafleet client in Node.js, generated at run time from protos/ with
// @grpc/grpc-js and @grpc/proto-loader: checks the gateway's health, runs a
// workflow (train -> merge -> validate -> register -> deploy), watches it,
// generates from the deployment, and decodes the google.rpc.BadRequest of a
// refused call.
//
//   npm ci
//   node client.js --gateway 127.0.0.1:50050 --base-model smollm2-135m-instruct \
//       --dataset-path "$PWD/../../.lorafleet/datasets/orders.jsonl"
//
// The last line printed is a JSON summary (for scripts and the test).
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// Where the .proto files come from: ours, googleapis' google/rpc (status and
// error details, from the google-proto-files package) and gRPC's health.
const PROTOS = path.resolve(__dirname, '..', '..', 'protos');
const GOOGLEAPIS = path.dirname(require.resolve('google-proto-files/package.json'));
const HEALTH = path.join(
  path.dirname(require.resolve('grpc-health-check/package.json')), 'proto');
const INCLUDE_DIRS = [PROTOS, GOOGLEAPIS, HEALTH];

// What a Node user needs: field names as in the .proto (keepCase), 64-bit
// integers as strings (longs: String, no precision lost), enums by name,
// unset fields present with their defaults, and the set oneof's name.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: INCLUDE_DIRS,
};

function parseArgs(argv) {
  const args = {
    gateway: '127.0.0.1:50050',
    baseModel: '',
    datasetPath: '',
    name: 'node-example',
    steps: 4,
    timeoutS: 1800,
    mode: 'quick',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    const key = {
      '--gateway': 'gateway',
      '--base-model': 'baseModel',
      '--dataset-path': 'datasetPath',
      '--name': 'name',
      '--steps': 'steps',
      '--timeout': 'timeoutS',
      '--validation-mode': 'mode',
    }[flag];
    if (!key) throw new Error(`unknown option ${flag}`);
    args[key] = ['steps', 'timeoutS'].includes(key) ? Number(value) : value;
  }
  if (!args.baseModel || !args.datasetPath) {
    throw new Error('--base-model and --dataset-path are required');
  }
  return args;
}

function loadStubs() {
  const definition = protoLoader.loadSync(
    ['lorafleet/v1/gateway.proto', 'health/v1/health.proto'], LOADER_OPTIONS);
  return grpc.loadPackageDefinition(definition);
}

// google.rpc.Status and its detail messages, decoded with protobufjs (the
// library proto-loader is built on) from the `grpc-status-details-bin` trailer.
function loadErrorTypes() {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    for (const dir of INCLUDE_DIRS) {
      const candidate = path.join(dir, target);
      if (require('fs').existsSync(candidate)) return candidate;
    }
    return protobuf.util.path.resolve(origin, target);
  };
  root.loadSync(
    ['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
  return root;
}

function errorDetails(error, root) {
  const raw = error.metadata && error.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return [];
  const status = root.lookupType('google.rpc.Status').decode(raw);
  return status.details.map((any) => {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = root.lookupType(typeName);
    return { type: typeName, ...type.toObject(type.decode(any.value), { defaults: true }) };
  });
}

const deadline = (seconds) => new Date(Date.now() + seconds * 1000);

function unary(client, method, request, seconds = 60) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline(seconds) }, (error, reply) =>
      (error ? reject(error) : resolve(reply)));
  });
}

function watch(gateway, jobId, seconds) {
  return new Promise((resolve, reject) => {
    const events = [];
    let job = null;
    const call = gateway.WatchWorkflowJob({ job_id: jobId }, { deadline: deadline(seconds) });
    call.on('data', (update) => {
      events.push(update.event);
      job = update.job;
      const e = update.event;
      console.log(`  ${e.stage.padEnd(9)} ${e.message}`);
    });
    call.on('error', reject);
    call.on('end', () => resolve({ events, job }));
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const stubs = loadStubs();
  const errors = loadErrorTypes();
  const credentials = grpc.credentials.createInsecure();
  const health = new stubs.grpc.health.v1.Health(args.gateway, credentials);
  const gateway = new stubs.lorafleet.v1.GatewayService(args.gateway, credentials);

  const serving = await unary(health, 'Check', { service: '' }, 10);
  console.log(`health        ${serving.status}`);

  const request = {
    base_model_id: args.baseModel,
    dataset_path: args.datasetPath,
    name: args.name,
    train_config: {
      rank: 4, alpha: 8, learning_rate: 5e-3, max_steps: args.steps,
      batch_size: 8, max_seq_length: 128, seed: 7, eval_fraction: 0.05,
    },
    gates: { max_latency_ratio: 100, max_perplexity_ratio: 1.5 },
    validation_examples: 4,
    validation_max_new_tokens: 8,
    validation_mode: args.mode,
  };
  const started = await unary(gateway, 'RunWorkflow', request);
  const jobId = started.job.status.job_id;
  console.log(`workflow      ${jobId}`);
  const { events } = await watch(gateway, jobId, args.timeoutS);
  const done = (await unary(gateway, 'GetWorkflowJob', { job_id: jobId })).job;
  console.log(`workflow      ${done.status.state}`);
  if (done.status.state !== 'JOB_STATE_SUCCEEDED') {
    throw new Error(`workflow ended ${done.status.state}: ${JSON.stringify(done.status.error)}`);
  }
  const deployment = done.result.deployment.name;

  const generated = await unary(gateway, 'Generate', {
    deployment,
    params: { prompt: 'Ship 2 lamps to Oslo for Ana Silva.', max_new_tokens: 8 },
  });
  console.log(`generate      ${JSON.stringify(generated.output.text)}`);

  // A refused call: the status carries which field is wrong and why.
  let refused = null;
  try {
    await unary(gateway, 'RunWorkflow', {
      ...request, train_config: { ...request.train_config, learning_rate: -1 },
    });
  } catch (error) {
    refused = {
      code: grpc.status[error.code],
      message: error.details,
      details: errorDetails(error, errors),
    };
    console.log(`refused       ${refused.code}: ${refused.message}`);
    for (const detail of refused.details) {
      for (const v of detail.field_violations || []) {
        console.log(`  field ${v.field}: ${v.description}`);
      }
    }
  }
  if (refused === null) throw new Error('a negative learning rate was accepted');

  console.log(JSON.stringify({
    health: serving.status,
    workflow: { job_id: jobId, state: done.status.state, events: events.length,
      deployment, model_id: done.result.deployment.model_id,
      revision: done.result.deployment.revision },
    generated: { text: generated.output.text, model_id: generated.model_id },
    refused,
  }));
}

main().catch((error) => {
  console.error(`error: ${error.code !== undefined ? grpc.status[error.code] + ': ' : ''}` +
    `${error.details || error.message}`);
  process.exit(1);
});
