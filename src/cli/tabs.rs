//! Column alignment as kubectl's output goes through Go's `text/tabwriter` (`describe`,
//! `rollout history`): cells end with a tab; a column block is a run of consecutive lines that
//! have a cell in that column, and every cell of a block is padded to the block's widest cell
//! plus the padding. The last cell of a line is never padded.

/// Aligns `text` as `tabwriter.NewWriter(out, 0, 8, padding, ' ', 0)` would.
pub(super) fn align(text: &str, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    // widths[i][j]: the width of column j on line i (every cell but the last is in a column).
    let mut widths: Vec<Vec<usize>> = lines.iter().map(|l| vec![0; l.len() - 1]).collect();
    let columns = widths.iter().map(Vec::len).max().unwrap_or(0);
    for column in 0..columns {
        let mut start = 0;
        while start < lines.len() {
            if widths[start].len() <= column {
                start += 1;
                continue;
            }
            let end = (start..lines.len()).find(|&i| widths[i].len() <= column).unwrap_or(lines.len());
            let width = (start..end).map(|i| lines[i][column].chars().count()).max().unwrap_or(0) + padding;
            for w in &mut widths[start..end] {
                w[column] = width;
            }
            start = end;
        }
    }
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    for (i, cells) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for (j, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if let Some(&w) = widths[i].get(j) {
                out.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn blocks_are_runs_of_lines_with_the_column() {
        let text = "Name:\tweb\nRollingUpdateStrategy:\t25% max unavailable\nConditions:\n  Type\tStatus\tReason\n  ----\t------\t------\n  Available \tTrue\tMinimumReplicasAvailable\nOldReplicaSets:\t<none>\n";
        let want = "\
Name:                   web
RollingUpdateStrategy:  25% max unavailable
Conditions:
  Type           Status  Reason
  ----           ------  ------
  Available      True    MinimumReplicasAvailable
OldReplicaSets:  <none>
";
        assert_eq!(align(text, 2), want);
    }

    #[test]
    fn empty_leading_cells_are_padded() {
        assert_eq!(align("  Labels:\ta=b\n\tc=d\n", 2), "  Labels:  a=b\n           c=d\n");
        assert_eq!(align("REVISION\tCHANGE-CAUSE\n1\t<none>\n", 2), "REVISION  CHANGE-CAUSE\n1         <none>\n");
    }
}
