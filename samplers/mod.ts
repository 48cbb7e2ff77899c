/**
 * Placeholder public face; filled by the plugin issues.
 *
 * @module
 */
export {};
