// The pack's workflows in the template browser in the order of their numbers, the main one ("1. ...") first.
// ComfyUI (0.3.75) lists a pack's templates (GET /workflow_templates) by globbing its workflows/ folder: in the file
// system's order (on ext4 a hash of the names), not by name. The browser (frontend 1.32.9) keeps that order: its
// default sort, "Newest", orders by a date these templates do not have, and "Default" does not sort.
import { api } from "../../../scripts/api.js"; // /scripts/api.js, from /extensions/<pack>/js/

const pack = decodeURIComponent(new URL(import.meta.url).pathname.split("/")[2]); // /extensions/<pack>/js/...
const number = (name) => parseInt(name, 10); // "10. Video edit ..." -> 10; NaN when unnumbered
const byNumber = (a, b) => (number(a) || Infinity) - (number(b) || Infinity) || a.localeCompare(b);

const listed = api.getWorkflowTemplates;
if (typeof listed === "function" && !listed.tavOrdered) {
  api.getWorkflowTemplates = async function (...args) {
    const templates = await listed.apply(this, args);
    if (Array.isArray(templates?.[pack])) templates[pack] = [...templates[pack]].sort(byNumber);
    return templates;
  };
  api.getWorkflowTemplates.tavOrdered = true;
}
