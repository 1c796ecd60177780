/**
 * The predict request body, in TensorFlow Serving's "row" (instances) form with Cloud ML Engine's
 * binary convention, as the codelab sends it:
 *
 *   {"instances": [{"image_bytes": {"b64": "<base64 JPEG>"}, "key": "optional, echoed back"}, ...]}
 *
 * An instance may also be the {"b64": ...} object itself (a model with one bytes input). The JSON
 * schema is checked by fastify (Ajv) before the handler runs; what a schema cannot say (valid
 * base64) is checked here. Every message names the instance by its index.
 */

/** A request that is the client's fault; the server answers `status` with {"error": message}. */
export class RequestError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'RequestError';
  }
}

export interface PredictInstance {
  /** The encoded image. */
  bytes: Buffer;
  /** Echoed back in this instance's prediction when given. */
  key?: string | number;
}

export interface PredictBody {
  signature_name?: string;
  instances: ({ image_bytes?: { b64: string }; b64?: string; key?: string | number } & Record<string, unknown>)[];
}

const B64 = { type: 'object', required: ['b64'], properties: { b64: { type: 'string' } } } as const;

/** JSON schema of the predict body; `maxInstances` is the server's --max_batch. */
export function predictBodySchema(maxInstances: number): object {
  return {
    type: 'object',
    required: ['instances'],
    properties: {
      signature_name: { type: 'string' },
      instances: {
        type: 'array',
        minItems: 1,
        maxItems: maxInstances,
        items: {
          type: 'object',
          properties: { image_bytes: B64, b64: { type: 'string' }, key: { anyOf: [{ type: 'string' }, { type: 'number' }] } },
          anyOf: [{ required: ['image_bytes'] }, { required: ['b64'] }],
        },
      },
    },
  };
}

const EXAMPLE = '{"instances": [{"image_bytes": {"b64": "<base64 JPEG>"}}]}';

/** One Ajv error as fastify hands it over (error.validation). */
export interface SchemaError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/** A readable message for the first schema violation, naming the instance index. */
export function schemaErrorMessage(errors: SchemaError[], maxInstances: number): string {
  // An instance with neither image field fails both anyOf branches and then anyOf itself: report that
  // one message instead of the first branch's ("must have required property 'image_bytes'").
  const noImage = errors.find((e) => e.keyword === 'anyOf' && /^\/instances\/\d+$/.test(e.instancePath));
  const err = noImage ?? errors[0];
  if (!err) return `invalid request body; expected ${EXAMPLE}`;
  const parts = err.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (parts.length === 0) {
    if (err.keyword === 'required') return `request body has no "instances" list; expected ${EXAMPLE}`;
    return `request body must be a JSON object; expected ${EXAMPLE}`;
  }
  if (parts.length === 1 && parts[0] === 'instances') {
    if (err.keyword === 'maxItems') return `too many instances: at most ${maxInstances} per request (the server's --max_batch); split the request`;
    if (err.keyword === 'minItems') return `"instances" is empty: send at least one image, e.g. ${EXAMPLE}`;
    return `"instances" must be a list, e.g. ${EXAMPLE}`;
  }
  if (parts[0] === 'instances' && /^\d+$/.test(parts[1] ?? '')) {
    const where = `instance ${parts[1]}`;
    const field = parts.slice(2).join('.');
    if (err === noImage) return `${where} has no image: expected {"image_bytes": {"b64": "<base64 image>"}} or {"b64": "<base64 image>"}`;
    if (field === '' && err.keyword === 'type') return `${where} must be an object such as {"image_bytes": {"b64": "<base64 image>"}}`;
    if (field === 'key') return `${where}: key must be a string or a number`;
    if (field === 'image_bytes' && err.keyword === 'required') return `${where}: image_bytes has no "b64" field; expected {"image_bytes": {"b64": "<base64 image>"}}`;
    return `${where}: ${field || 'instance'} ${err.message ?? 'is invalid'}`;
  }
  return `request body: ${parts.join('.')} ${err.message ?? 'is invalid'}`;
}

// Standard or URL-safe alphabet, padding optional; whitespace (line-wrapped base64) is allowed.
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

function decodeBase64(text: string, where: string): Buffer {
  const compact = text.replace(/\s+/g, '');
  if (compact === '') throw new RequestError(400, `${where}: b64 is empty; send the image file's bytes, base64-encoded`);
  if (!BASE64.test(compact) || compact.replace(/=+$/, '').length % 4 === 1) {
    throw new RequestError(400, `${where}: b64 is not valid base64; send the image file's bytes, base64-encoded`);
  }
  return Buffer.from(compact, 'base64');
}

/** The images of a schema-checked body, base64-decoded; throws RequestError(400) naming the instance. */
export function readInstances(body: PredictBody): PredictInstance[] {
  return body.instances.map((inst, i) => {
    const where = `instance ${i}`;
    const b64 = inst.image_bytes?.b64 ?? inst.b64;
    if (typeof b64 !== 'string') throw new RequestError(400, `${where} has no image: expected {"image_bytes": {"b64": "<base64 image>"}}`);
    const out: PredictInstance = { bytes: decodeBase64(b64, where) };
    if (inst.key !== undefined) out.key = inst.key;
    return out;
  });
}
