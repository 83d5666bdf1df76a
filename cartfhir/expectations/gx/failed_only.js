// The "Show All" / "Failed Only" filter of GX's validation pages, without jQuery (which the
// pages load from a CDN, unreachable offline). Same elements as GX's own functions.
function cartfhirShowSucceeded(show) {
  const display = show ? "" : "none";
  const set = (element) => { if (element) { element.style.display = display; } };
  document.querySelectorAll(".hide-succeeded-validation-target-child")
    .forEach((cell) => set(cell.parentElement));
  document.querySelectorAll(".hide-succeeded-validation-target").forEach(set);
  document.querySelectorAll(".hide-succeeded-validations-column-section-target-child")
    .forEach((block) => {
      const section = block.parentElement && block.parentElement.parentElement;
      set(section);
      if (section && section.id) {
        document.querySelectorAll('a[href$="' + section.id + '"]').forEach(set);
      }
    });
}
function showAllValidations() { cartfhirShowSucceeded(true); }
function hideSucceededValidations() { cartfhirShowSucceeded(false); }
