/**
 * Header names as CGI-style servers (WSGI, Rack, PHP) read them: `x_tenant` and
 * `x-tenant` become one variable, HTTP_X_TENANT. So wherever the proxy removes a header
 * or matches one, it takes both spellings as one name; otherwise a client could send a
 * copy under the other one that a rule did not see or the proxy did not remove.
 */

/** The name with "_" read as "-". */
export const cgiName = (name: string): string => (name.includes("_") ? name.replaceAll("_", "-") : name);

/** Whether `name` is `target` (a name with "-") in either spelling. */
export const sameCgiName = (name: string, target: string): boolean => name === target || (name.includes("_") && cgiName(name) === target);

/** Whether `name`, in either spelling, is in `names` (names with "-"). On every request's every field: no closure, one shape each. */
export function inCgiSet(names: ReadonlySet<string>, name: string): boolean {
  return names.has(name) || (name.includes("_") && names.has(cgiName(name)));
}

export function inCgiList(names: readonly string[], name: string): boolean {
  return names.includes(name) || (name.includes("_") && names.includes(cgiName(name)));
}
