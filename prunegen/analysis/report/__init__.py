"""The pages: `tables` (the table copies beside a page), `markdown` (numbers as pages
print them), `claims_page` (the results page, claim by claim), `methods_page` (a study
that defines arms), `build` (`prunegen results`)."""
