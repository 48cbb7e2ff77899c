// A file path → file: URL that also works for paths with spaces or '#'.
import { pathToFileURL } from "node:url";

/** `file:` URL string of an absolute path. */
export function toFileUrl(path: string): string {
  return pathToFileURL(path).href;
}
