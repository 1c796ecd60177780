/**
 * A minimal stand-in for the parts of Apache Beam that the Dataflow pipeline's Python calls, so the
 * pipeline's own code runs under the machine's python3 (Beam cannot be installed here).
 *
 * Eager and in memory: a PCollection is a list, `pcoll | 'Label' >> transform` runs the transform
 * at once. FileSystems maps gs://BUCKET/KEY to FAKE_GCS_ROOT/BUCKET/KEY. WriteToTFRecord writes real
 * TFRecord framing (masked CRC32C) with Beam's default shard names, so lib/tfrecord reads it.
 * The driver loads the `source` the way Beam's python_callable.load_from_script does (blank and
 * '#' lines dropped, the last top-level def/class is the callable) and calls it with the kwargs.
 *
 * What it does not reproduce: pickling of the DoFns to workers, parallelism, retries, Beam's real
 * temp-file-then-rename writes, and the YAML-level validation of the template.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const INIT = `
import random
from apache_beam import pvalue, io


class PTransform(object):
    def __init__(self, label=None):
        self.label = label

    def __rrshift__(self, label):
        self.label = label
        return self

    def expand(self, pcoll):
        raise NotImplementedError


class PCollection(object):
    def __init__(self, items):
        self.items = list(items)

    def __or__(self, transform):
        if not isinstance(transform, PTransform):
            raise TypeError('not a PTransform: %r' % (transform,))
        return transform.expand(self)


class PBegin(PCollection):
    def __init__(self):
        super().__init__([])


class DoFn(object):
    pass


class Create(PTransform):
    def __init__(self, values, reshuffle=True):
        super().__init__()
        self.values = list(values)

    def expand(self, pbegin):
        if not isinstance(pbegin, PBegin):
            raise TypeError('Create must be applied to the pipeline root')
        return PCollection(self.values)


class DoOutputs(object):
    def __init__(self, tagged):
        self._tagged = tagged

    def __getitem__(self, tag):
        return self._tagged[tag]


class ParDo(PTransform):
    def __init__(self, fn):
        super().__init__()
        if not isinstance(fn, DoFn):
            raise TypeError('ParDo needs a DoFn')
        self.fn = fn
        self.tags = None

    def with_outputs(self, *tags):
        self.tags = tags
        return self

    def expand(self, pcoll):
        main = []
        tagged = dict((t, []) for t in (self.tags or ()))
        for item in pcoll.items:
            for out in self.fn.process(item) or ():
                if isinstance(out, pvalue.TaggedOutput):
                    if out.tag not in tagged:
                        raise ValueError('undeclared output tag %r' % out.tag)
                    tagged[out.tag].append(out.value)
                else:
                    main.append(out)
        if self.tags is None:
            return PCollection(main)
        if main:
            raise ValueError('untagged outputs from a ParDo with declared tags')
        return DoOutputs(dict((t, PCollection(v)) for t, v in tagged.items()))


class Reshuffle(PTransform):
    def expand(self, pcoll):
        items = list(pcoll.items)
        random.Random(7).shuffle(items)
        return PCollection(items)
`;

const PVALUE = `
class TaggedOutput(object):
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value
`;

const IO = `
import os
import struct
from apache_beam.io.filesystems import local_path

POLY = 0x82F63B78
TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def shard_paths(prefix, suffix, num_shards):
    if num_shards < 1:
        raise ValueError('the stand-in needs num_shards >= 1')
    return [prefix + '-%05d-of-%05d' % (i, num_shards) + suffix for i in range(num_shards)]


def spread(items, num_shards):
    shards = [[] for _ in range(num_shards)]
    for i, item in enumerate(items):
        shards[i % num_shards].append(item)
    return shards


def _open(path):
    p = local_path(path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return open(p, 'wb')


def _sharded_write(file_path_prefix, file_name_suffix, num_shards, shard_name_template, encode):
    import apache_beam as beam
    if shard_name_template is not None:
        raise ValueError('the stand-in knows only the default shard name template')

    class W(beam.PTransform):
        def expand(self, pcoll):
            for p, items in zip(shard_paths(file_path_prefix, file_name_suffix, num_shards), spread(pcoll.items, num_shards)):
                with _open(p) as f:
                    for item in items:
                        f.write(encode(item))
            return beam.PCollection([])
    return W()


def _tfrecord(rec):
    if not isinstance(rec, bytes):
        raise TypeError('BytesCoder: expected bytes, got %r' % type(rec))
    length = struct.pack('<Q', len(rec))
    return length + struct.pack('<I', masked(length)) + rec + struct.pack('<I', masked(rec))


def _text_line(line):
    if not isinstance(line, str):
        raise TypeError('WriteToText: expected str, got %r' % type(line))
    return (line + '\\n').encode('utf-8')


def WriteToTFRecord(file_path_prefix, coder=None, file_name_suffix='', num_shards=0, shard_name_template=None, compression_type=None):
    return _sharded_write(file_path_prefix, file_name_suffix, num_shards, shard_name_template, _tfrecord)


def WriteToText(file_path_prefix, file_name_suffix='', num_shards=0, shard_name_template=None, **unused):
    return _sharded_write(file_path_prefix, file_name_suffix, num_shards, shard_name_template, _text_line)
`;

const FILESYSTEM = `
class CompressionTypes(object):
    AUTO = 'auto'
    UNCOMPRESSED = 'uncompressed'
`;

const FILESYSTEMS = `
import os
from apache_beam.io.filesystem import CompressionTypes


def local_path(path):
    if path.startswith('gs://'):
        return os.path.join(os.environ['FAKE_GCS_ROOT'], path[len('gs://'):])
    return path


class FileSystems(object):
    @staticmethod
    def open(path, mime_type='application/octet-stream', compression_type='auto'):
        if compression_type != CompressionTypes.UNCOMPRESSED:
            raise ValueError('the pipeline must read files as they are, not by their extension')
        return open(local_path(path), 'rb')

    @staticmethod
    def exists(path):
        return os.path.exists(local_path(path))
`;

const DRIVER = `
import json
import sys


def load_from_script(source):
    lines = [line for line in source.split('\\n') if line.strip() and line.strip()[0] != '#']
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    lines = [line[indent:] for line in lines]
    for line in reversed(lines):
        if line[0] != ' ':
            if line.startswith('def '):
                name = line[4:line.index('(')].strip()
            elif line.startswith('class '):
                name = line[6:line.index('(') if '(' in line else line.index(':')].strip()
            else:
                raise ValueError('the last top-level statement is not a def or class: %r' % line)
            break
    exec_globals = dict()
    exec('\\n'.join(lines), exec_globals)
    return exec_globals[name], exec_globals


def main():
    cfg = json.load(open(sys.argv[1]))
    mode = sys.argv[2]
    if cfg['constructor'] != '__constructor__':
        raise ValueError('expected constructor __constructor__')
    ctor, env = load_from_script(cfg['source'])
    if mode == 'run':
        import apache_beam as beam
        rejects = beam.PBegin() | 'Pipeline' >> ctor(**cfg['kwargs'])
        print(json.dumps(dict(transform=ctor.__name__, rejects=len(rejects.items))))
    elif mode == 'parse-csv':
        path = sys.argv[3]
        text = env['read_all'](path).decode('utf-8')
        rows = env['parse_csv'](text, path, cfg['kwargs']['labels'])
        print(json.dumps([list(r) for r in rows]))
    else:
        raise ValueError(mode)


main()
`;

/** Write the stand-in package and the driver into `dir`; returns the driver's path. */
export function writeFakeBeam(dir: string): string {
  const files: Record<string, string> = {
    'apache_beam/__init__.py': INIT,
    'apache_beam/pvalue.py': PVALUE,
    'apache_beam/io/__init__.py': IO,
    'apache_beam/io/filesystem.py': FILESYSTEM,
    'apache_beam/io/filesystems.py': FILESYSTEMS,
    'driver.py': DRIVER,
  };
  for (const [rel, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text.replace(/^\n/, ''));
  }
  return path.join(dir, 'driver.py');
}
