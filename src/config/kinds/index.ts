/** Importing this registers every built-in kind; add a kind by adding its module here. */
export * from "./authorization-policy";
export * from "./control-plane-config";
export * from "./destination-policy";
export * from "./http-route";
export * from "./proxy-config";
export * from "./rate-limit-policy";
export * from "./request-authentication";
export * from "./service";
