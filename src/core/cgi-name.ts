/**
 * Header names as CGI-style servers (WSGI, Rack, PHP, Apache's CGI gateways) read them:
 * `x_tenant` and `x-tenant` become one variable, HTTP_X_TENANT, and older gateways map
 * every other byte that is not a letter or digit the same way (`x.tenant`). So wherever
 * the proxy removes a header or matches one, it takes all such spellings as one name;
 * otherwise a client could send a copy under another one that a rule did not see or the
 * proxy did not remove. Names here are lower case, as parsed.
 */

const ODD = /[^a-z0-9-]/;
const ODD_ALL = /[^a-z0-9-]/g;

/** The name with every byte other than a letter, digit or "-" read as "-". */
export const cgiName = (name: string): string => (ODD.test(name) ? name.replace(ODD_ALL, "-") : name);

/** Whether `name` is `target` (a name in cgiName form) in any spelling. */
export const sameCgiName = (name: string, target: string): boolean => name === target || (ODD.test(name) && cgiName(name) === target);

/** Whether `name`, in any spelling, is in `names` (names in cgiName form). On every request's every field: no closure, one shape each. */
export function inCgiSet(names: ReadonlySet<string>, name: string): boolean {
  return names.has(name) || (ODD.test(name) && names.has(cgiName(name)));
}

export function inCgiList(names: readonly string[], name: string): boolean {
  return names.includes(name) || (ODD.test(name) && names.includes(cgiName(name)));
}
