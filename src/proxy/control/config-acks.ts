/**
 * Telling the control plane what became of each config version: applied, or refused with
 * the reason. It keeps that beside the sidecar's registration (control-plane/proxy-status.ts),
 * so while the sidecar is not registered (refused, as past --max-endpoints-per-service, or
 * its lease lapsed) acknowledgements wait here, and config is followed meanwhile. A new
 * registration starts with no status: it is told the latest of each again.
 */
import type { Logger } from "../../core/log.ts";

export interface ConfigAck {
  version: string;
  /** Why it was refused; absent when applied. */
  error?: string;
}

export class ConfigAcks {
  /** The latest version applied and the latest refused: what a registration is told. */
  private latest: { applied?: ConfigAck; refused?: ConfigAck } = {};
  /** Not delivered yet, oldest first. */
  private unsent: ConfigAck[] = [];
  /** Sends run one after another, so no acknowledgement goes twice or out of order. */
  private sending = Promise.resolve();

  constructor(private send: (ack: ConfigAck) => Promise<void>, private log: Logger) {}

  get pending(): boolean {
    return this.unsent.length > 0;
  }

  record(version: string, error?: string): void {
    const kind = error === undefined ? "applied" : "refused";
    const ack: ConfigAck = error === undefined ? { version } : { version, error };
    const replaced = this.latest[kind];
    this.latest[kind] = ack;
    this.unsent = [...this.unsent.filter((a) => a !== replaced), ack];
  }

  /** Registered anew: the control plane holds no status for this sidecar yet. */
  registered(): void {
    this.unsent = [this.latest.applied, this.latest.refused].filter((a): a is ConfigAck => a !== undefined);
  }

  /** Delivers what is unsent; the first failure is logged and leaves the rest for the next flush. Never throws. */
  flush(): Promise<void> {
    this.sending = this.sending.then(() => this.drain());
    return this.sending;
  }

  private async drain(): Promise<void> {
    while (this.unsent.length > 0) {
      const ack = this.unsent[0]!;
      try {
        await this.send(ack);
      } catch (err) {
        this.log.warn({ version: ack.version, err: (err as Error).message }, "config acknowledgement not delivered; it is sent again later");
        return;
      }
      this.unsent = this.unsent.filter((a) => a !== ack);
    }
  }
}
