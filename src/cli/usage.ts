/** A command line the CLI does not accept: exit 2 with the message. */
export class UsageError extends Error {
  override name = 'UsageError';
}
