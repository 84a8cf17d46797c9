/** The sidecar's own Service in a config: the one its inbound serves (a valid config has at most one by that name). */
import type { Service } from "../config/kinds/service.ts";

export function ownService(services: readonly Service[], self: { service: string; namespace: string }): Service | undefined {
  return services.find((s) => s.metadata.name === self.service && s.metadata.namespace === self.namespace);
}
