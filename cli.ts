/**
 * The texforce command line.
 *
 * @module
 */
if (import.meta.main) {
  console.log("texforce: CLI not built yet");
}
export {};
