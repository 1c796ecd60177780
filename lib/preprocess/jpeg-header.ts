/**
 * The frame header of a JPEG (size and number of colour components), read from the marker segments.
 * Our own ten-line parser rather than sharp's metadata(): preprocessing needs only these two facts for
 * the common case (a 3-component JPEG kept as it is), and a second libvips call per image cost about
 * a tenth of the decode time that bounds preprocessing throughput. Anything unusual falls back to sharp.
 */
export interface JpegHeader {
  width: number;
  height: number;
  /** 1 grayscale, 3 YCbCr (or RGB), 4 CMYK / YCCK. */
  components: number;
}

/** SOF0–SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range but are not frames. */
function isStartOfFrame(marker: number): boolean {
  return marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
}

/** The frame header, or undefined when the bytes are not a JPEG or have no frame before the scan. */
export function readJpegHeader(b: Uint8Array): JpegHeader | undefined {
  if (b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) return undefined;
  let i = 2;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return undefined;
    const marker = b[i + 1] as number;
    // Fill bytes, and markers without a length (TEM, RSTn).
    if (marker === 0xff) {
      i++;
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) return undefined; // scan or end before any frame
    const len = ((b[i + 2] as number) << 8) | (b[i + 3] as number);
    if (len < 2) return undefined;
    if (isStartOfFrame(marker)) {
      if (i + 10 > b.length) return undefined;
      return {
        height: ((b[i + 5] as number) << 8) | (b[i + 6] as number),
        width: ((b[i + 7] as number) << 8) | (b[i + 8] as number),
        components: b[i + 9] as number,
      };
    }
    i += 2 + len;
  }
  return undefined;
}
