// The model's web page (served by lib/serve/page.ts). A client of the server like any other: the
// image goes to POST /v1/models/{name}:predict in the codelab's body, and the answer is drawn with
// notebook 08's chart (lib/charts/specs.ts predictionProbabilities, the compiled module itself).
// With "Run in this browser" on, the exported model is loaded with TensorFlow.js and the same image
// is prepared with the server's own steps: libvips (wasm-vips) for decode, crop and resize as sharp
// does them, the server's centerCropWindow and normalizeInto, then softmax over the model's output.
import specs from '/page/lib/charts/specs.mjs';
import augment from '/page/lib/train/augment.mjs';
import preprocessing from '/page/lib/train/preprocessing.mjs';
import { evalTransform } from '/page/vips-preprocess.mjs';

const $ = (id) => document.getElementById(id);
const vega = globalThis.vega;
const vegaLite = globalThis.vegaLite;
const tf = globalThis.tf;

let info;
/** The last image classified, so switching "run in this browser" on classifies it at once. */
let current;
/** Promise of { model, vips } once the in-browser run was asked for. */
let runtime;
/** The server's last probabilities, for the side-by-side comparison. */
let serverAnswer;
const views = new Map();
/** The exact request body last sent (the page shows it shortened). */
let requestText = '';

const SHOW_B64 = 2000;

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

/** Adds a message to the error box (the server's refusal and the browser's can both be there). */
function showError(message) {
  $('error').textContent = $('error').textContent ? `${$('error').textContent}\n${message}` : message;
  $('error').hidden = false;
  setStatus('error', 'Something went wrong: see the message above.');
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

const mb = (n) => `${(n / (1024 * 1024)).toFixed(n < 1024 * 1024 ? 2 : 1)} MB`;

function base64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function drawChart(id, probabilities) {
  views.get(id)?.finalize();
  const spec = specs.predictionProbabilities(info.labels, probabilities);
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'svg', container: $(id), hover: true });
  views.set(id, view);
  await view.runAsync();
}

function showAnswer(which, probabilities) {
  let k = 0;
  probabilities.forEach((p, i) => {
    if (p > probabilities[k]) k = i;
  });
  const label = $(`${which}-label`);
  label.textContent = `${info.labels[k]} (${(100 * probabilities[k]).toFixed(1)} %)`;
  label.dataset.class = String(k);
  label.dataset.label = info.labels[k];
  label.dataset.probabilities = JSON.stringify(probabilities);
  return drawChart(`${which}-chart`, probabilities);
}

function showExchange(url, text, status, responseText) {
  requestText = text;
  $('exchange').hidden = false;
  $('request-line').textContent = `POST ${new URL(url, location.href).href}   Content-Type: application/json   (${text.length} bytes)`;
  const m = /"b64":"([^"]*)"/.exec(text);
  let shown = text;
  if (m && m[1].length > SHOW_B64) {
    const rest = m[1].length - SHOW_B64;
    shown = text.replace(m[1], `${m[1].slice(0, SHOW_B64)}… (${rest} more base64 characters; Copy gives the whole body)`);
  }
  $('request').textContent = shown;
  $('response-status').textContent = status === undefined ? '(no answer)' : `HTTP ${status}`;
  $('response').textContent = responseText ?? '';
}

/** POST the image to :predict; the probabilities, or undefined after showing why not. */
async function askServer(bytes) {
  const text = JSON.stringify({ instances: [{ image_bytes: { b64: base64(bytes) } }] });
  showExchange(info.predictPath, text, undefined, '');
  let res;
  let body;
  try {
    res = await fetch(info.predictPath, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text });
    body = await res.text();
  } catch (err) {
    showError(`Cannot reach the server at ${location.origin} (${err.message}): is imgclass serve still running? Start it again, then reload this page.`);
    return undefined;
  }
  showExchange(info.predictPath, text, res.status, body);
  let answer;
  try {
    answer = JSON.parse(body);
  } catch {
    showError(`The server answered HTTP ${res.status} with a body that is not JSON: ${body.slice(0, 200)}`);
    return undefined;
  }
  if (!res.ok) {
    showError(`The server answered HTTP ${res.status}: ${answer.error ?? body.slice(0, 300)}`);
    return undefined;
  }
  const p = answer.predictions?.[0];
  if (!p || !Array.isArray(p.probabilities) || p.probabilities.length !== info.labels.length) {
    showError(`The server's answer has no probabilities for the ${info.labels.length} classes: ${body.slice(0, 300)}`);
    return undefined;
  }
  return p.probabilities;
}

function browserRuntime() {
  runtime ??= (async () => {
    if (!globalThis.crossOriginIsolated) {
      throw new Error(
        'this page is not cross-origin isolated, so wasm-vips cannot start its threads; open it at http://127.0.0.1:PORT or http://localhost:PORT, or over https',
      );
    }
    await tf.setBackend(info.browserBackend);
    await tf.ready();
    const [model, vips] = await Promise.all([
      tf.loadLayersModel(info.modelJsonPath),
      // Only vips.wasm is served: HEIF, JPEG XL and SVG are extra modules the page does not load.
      globalThis.Vips({ dynamicLibraries: [] }),
    ]);
    return { model, vips };
  })();
  runtime.catch(() => (runtime = undefined));
  return runtime;
}

/** The model run here on `bytes`; the probabilities, or undefined after showing why not. */
async function askBrowser(bytes) {
  $('browser-state').textContent = 'loading the model in this browser…';
  let rt;
  try {
    rt = await browserRuntime();
  } catch (err) {
    $('browser-state').textContent = '';
    showError(`Could not load the model in this browser: ${err.message}`);
    return undefined;
  }
  $('browser-state').textContent = `model loaded (TensorFlow.js ${tf.version.tfjs}, ${tf.getBackend()} backend)`;
  const s = info.preprocessing;
  let x;
  try {
    const rgb = evalTransform(rt.vips, bytes, s, augment.centerCropWindow);
    x = preprocessing.normalizeInto(rgb, new Float32Array(rgb.length), s);
  } catch (err) {
    showError(`This browser could not read the image (JPEG, PNG, WebP, GIF, TIFF): ${err.message}`);
    return undefined;
  }
  const probs = tf.tidy(() => tf.softmax(rt.model.predict(tf.tensor4d(x, [1, s.imageSize, s.imageSize, 3]))));
  const out = Array.from(await probs.data());
  probs.dispose();
  return out;
}

function showAgreement(server, browser) {
  const el = $('agreement');
  if (!server) {
    el.textContent = 'No server answer to compare with.';
    el.className = '';
    return;
  }
  const diff = Math.max(...server.map((p, i) => Math.abs(p - browser[i])));
  const argmax = (v) => v.reduce((k, p, i) => (p > v[k] ? i : k), 0);
  const same = argmax(server) === argmax(browser);
  el.dataset.maxDifference = String(diff);
  el.className = same && diff <= 1e-4 ? 'ok' : 'bad';
  el.textContent = `${same ? 'Same class as the server' : 'A different class from the server'}; largest difference in a probability: ${diff.toExponential(2)}${diff <= 1e-4 ? ' (within 1e-4)' : ' (more than 1e-4)'}.`;
}

async function runBrowserSide() {
  if (!current || !$('in-browser').checked) return;
  $('browser-answer').hidden = false;
  const probs = await askBrowser(current.bytes);
  if (!probs) return;
  await showAnswer('browser', probs);
  showAgreement(serverAnswer, probs);
}

async function classify(blob, name) {
  clearError();
  if (blob.type && !blob.type.startsWith('image/')) {
    showError(`${name} is not an image (its type is ${blob.type}); choose a JPEG, PNG or WebP file.`);
    return;
  }
  // The request carries the file as base64: 4 characters per 3 bytes, plus the JSON around it.
  const requestBytes = 4 * Math.ceil(blob.size / 3) + 64;
  if (requestBytes > info.maxBody) {
    showError(
      `${name} is ${mb(blob.size)}; sent as base64 it would make a request of ${mb(requestBytes)}, over this server's limit of ${mb(info.maxBody)} (--max_body). ` +
        'Choose a smaller image, or start the server with a larger --max_body.',
    );
    return;
  }
  setStatus('busy', `Classifying ${name}…`);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  current = { bytes, name };
  serverAnswer = undefined;
  $('results').hidden = false;
  $('image').src = URL.createObjectURL(blob);
  $('image-caption').textContent = `${name}, ${bytes.length} bytes`;
  $('server-label').textContent = '…';
  $('server-label').dataset.probabilities = '[]';
  $('browser-label').dataset.probabilities = '[]';
  serverAnswer = await askServer(bytes);
  if (serverAnswer) await showAnswer('server', serverAnswer);
  else $('server-label').textContent = 'no answer';
  await runBrowserSide();
  if ($('status').dataset.state !== 'error') setStatus('done', `Classified ${name}.`);
}

function fileFrom(list) {
  return list && list.length > 0 ? list[0] : undefined;
}

function wireInputs() {
  $('file').addEventListener('change', (e) => {
    const f = fileFrom(e.target.files);
    if (f) void classify(f, f.name);
    e.target.value = '';
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = fileFrom(e.dataTransfer?.files);
    if (f) void classify(f, f.name);
    else showError('What was dropped is not a file: drop an image file (JPEG, PNG, WebP).');
  });
  document.addEventListener('paste', (e) => {
    const item = [...(e.clipboardData?.items ?? [])].find((i) => i.kind === 'file');
    const f = item?.getAsFile();
    if (f) void classify(f, f.name || 'pasted image');
    else showError('The clipboard holds no image: copy an image (not its address), then paste.');
  });
  $('in-browser').addEventListener('change', () => {
    if ($('in-browser').checked) {
      if (current) void runBrowserSide();
      else void askBrowserWarmup();
    } else {
      $('browser-answer').hidden = true;
    }
  });
  $('copy-request').addEventListener('click', () => navigator.clipboard?.writeText(requestText));
  wireCamera();
}

async function askBrowserWarmup() {
  $('browser-state').textContent = 'loading the model in this browser…';
  try {
    await browserRuntime();
    $('browser-state').textContent = `model loaded (TensorFlow.js ${tf.version.tfjs}, ${tf.getBackend()} backend)`;
  } catch (err) {
    $('browser-state').textContent = '';
    showError(`Could not load the model in this browser: ${err.message}`);
  }
}

function wireCamera() {
  if (!navigator.mediaDevices?.getUserMedia) return; // not offered (no camera API, or not a secure context)
  $('camera').hidden = false;
  let stream;
  const close = () => {
    stream?.getTracks().forEach((t) => t.stop());
    stream = undefined;
    $('camera-view').hidden = true;
  };
  $('camera').addEventListener('click', async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true });
    } catch (err) {
      showError(`The camera is not available: ${err.message}`);
      return;
    }
    $('video').srcObject = stream;
    $('camera-view').hidden = false;
  });
  $('capture').addEventListener('click', () => {
    const v = $('video');
    const canvas = document.createElement('canvas');
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    canvas.getContext('2d').drawImage(v, 0, 0);
    canvas.toBlob((blob) => (blob ? void classify(blob, 'camera photo') : showError('Could not take a photo from the camera.')), 'image/jpeg', 0.92);
  });
  $('camera-close').addEventListener('click', close);
}

async function main() {
  try {
    const res = await fetch('/page/info.json');
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    info = await res.json();
  } catch (err) {
    showError(`Cannot read the model's description from the server (${err.message}): is imgclass serve running?`);
    return;
  }
  $('model-name').textContent = info.modelName;
  $('model-version').textContent = info.version;
  $('browser-backend').textContent = info.browserBackend;
  const p = info.preprocessing;
  $('model-facts').textContent =
    `${info.labels.length} classes: ${info.labels.join(', ')}. Input ${info.imageSize} × ${info.imageSize} RGB: ` +
    `center crop of ${info.imageSize} / (${info.imageSize} + ${p.cropPadding}) of the shorter side, ${p.resize} resize, ` +
    `(x − mean) / stddev per channel. Predict: POST ${info.predictPath}`;
  document.title = `imgclass: ${info.modelName} ${info.version}`;
  wireInputs();
  setStatus('ready', 'Ready: give the model an image.');
}

void main();
