/** The config model: manifest schemas (the API), the kind registry, loading and validation. */
export * from "./duration";
export * from "./issues";
export * from "./kinds";
export * from "./load";
export * from "./manifest";
export * from "./validate";
